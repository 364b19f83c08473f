"""Story tests per layer: insert, update, delete, re-insert, replay; rows compared exactly.

Run against a local lake and a real S3-compatible server (moto), as in dlt's destination
matrix.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from tests.support.lakes import Driver
from tests.support.milestones import event, pos, ts
from tidemark.kernel import columns as c
from tidemark.sinks.lake import Lake

TABLE = "shop.public.customers"
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("balance", pa.decimal128(12, 2))])


@pytest.fixture(
    params=[
        ("local", "copy_on_write"),
        ("s3", "copy_on_write"),
        ("local", "merge_on_read"),
        ("s3", "merge_on_read"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def lake(request, lake_root):
    """Both storages, both write modes: every story must give the same rows."""
    storage, mode = request.param
    modes = {"*": mode}
    if storage == "local":
        lake = Lake(lake_root(), app_id="story", write_modes=modes)
    else:
        root, options = request.getfixturevalue("s3_lake")()
        lake = Lake(root, app_id="story", storage_options=options, write_modes=modes)
    yield lake
    lake.close()


def live_row(id, name, balance, op, n, batch):
    return {
        "id": id,
        "name": name,
        "balance": balance,
        c.OP: op,
        c.POSITION: pos(n),
        c.SOURCE_TS: ts(n),
        c.BATCH: batch,
    }


def version(id, name, balance, op, n, batch_in, closed=None):
    end, batch_out = closed or (None, None)
    return {
        "id": id,
        "name": name,
        "balance": balance,
        c.VALID_FROM: ts(n),
        c.VALID_TO: None if end is None else ts(end),
        c.BATCH_IN: batch_in,
        c.BATCH_OUT: batch_out,
        c.OP: op,
        c.POSITION: pos(n),
        c.GENERATION: 1,  # the table was never created again (docs/schema-changes.md)
    }


def test_story_insert_update_delete_reinsert_replay(lake):
    d = Driver(lake, TABLE, SCHEMA)
    # load 1: initial inserts (one far key in another bucket)
    d.run(
        [
            event("c", pos(1), ts(1), id=1, name="Ann", balance=Decimal("10.00")),
            event("c", pos(2), ts(2), id=2, name="Bob", balance=Decimal("0.01")),
            event("c", pos(3), ts(3), id=100_000, name="Zoë", balance=None),
        ]
    )
    assert d.read("live") == [
        live_row(1, "Ann", Decimal("10.00"), "c", 1, 1),
        live_row(2, "Bob", Decimal("0.01"), "c", 2, 1),
        live_row(100_000, "Zoë", None, "c", 3, 1),
    ]
    # load 2: update, no-op update, delete
    d.run(
        [
            event("u", pos(4), ts(4), id=1, name="Ann", balance=Decimal("12.50")),
            event("u", pos(5), ts(5), id=100_000, name="Zoë", balance=None),
            event("d", pos(6), ts(6), id=2, name="Bob", balance=Decimal("0.01")),
        ]
    )
    # load 3: re-insert the deleted key, two updates of one key in one batch
    d.run(
        [
            event("c", pos(7), ts(7), id=2, name="Bob II", balance=Decimal("1.00")),
            event("u", pos(8), ts(8), id=1, name="Ann B", balance=Decimal("12.50")),
            event("u", pos(9), ts(9), id=1, name="Ann C", balance=Decimal("12.50")),
        ]
    )
    expected_live = [
        live_row(1, "Ann C", Decimal("12.50"), "u", 9, 3),
        live_row(2, "Bob II", Decimal("1.00"), "c", 7, 3),
        live_row(100_000, "Zoë", None, "c", 3, 1),
    ]
    expected_forensic = [
        version(1, "Ann", Decimal("10.00"), "c", 1, 1, (4, 2)),
        version(1, "Ann", Decimal("12.50"), "u", 4, 2, (8, 3)),
        version(1, "Ann B", Decimal("12.50"), "u", 8, 3, (9, 3)),
        version(1, "Ann C", Decimal("12.50"), "u", 9, 3),
        version(2, "Bob", Decimal("0.01"), "c", 2, 1, (6, 2)),
        version(2, "Bob II", Decimal("1.00"), "c", 7, 3),
        version(100_000, "Zoë", None, "c", 3, 1),
    ]
    assert d.read("live") == expected_live
    assert d.read("forensic") == expected_forensic
    changelog = d.read("changelog")
    assert [(r["id"], r[c.OP], r[c.BATCH]) for r in changelog] == [
        (1, "c", 1),
        (2, "c", 1),
        (100_000, "c", 1),
        (1, "u", 2),
        (100_000, "u", 2),
        (2, "d", 2),
        (2, "c", 3),
        (1, "u", 3),
        (1, "u", 3),
    ]
    # load 3 again (a replay after a crash): nothing changes, every layer reports a skip
    again = d.run(
        [event("c", pos(7), ts(7), id=2, name="Bob II", balance=Decimal("1.00"))], batch_id=3
    )
    assert again.skipped and all(r.skipped for r in again.commits)
    # the same events under a new batch id (runner rebuilt the batch): still applied once
    d.run([event("u", pos(9), ts(9), id=1, name="Ann C", balance=Decimal("12.50"))])
    assert d.read("live") == expected_live
    assert d.read("forensic") == expected_forensic
    assert len(d.read("changelog")) == 9
    assert lake.applied_position(TABLE) == pos(9)
    assert lake.last_batch_id() == 4


def test_open_reads_back_txn_and_position(lake):
    d = Driver(lake, TABLE, SCHEMA)
    d.run([event("c", pos(1), ts(1), id=1, name="a", balance=None)])
    d.run([event("u", pos(2), ts(2), id=1, name="b", balance=None)])
    reopened = Lake(lake.root, app_id="story", storage_options=lake.storage_options)
    assert reopened.last_batch_id() == 2
    assert reopened.applied_position(TABLE) == pos(2)
    for layer in c.Layer:
        assert reopened.sink(TABLE, layer).open() == 2
    current = reopened.current_versions(TABLE, pa.table({"id": pa.array([1, 7], pa.int64())}))
    assert current is not None and current.to_pylist() == [version(1, "b", None, "u", 2, 2)]


EXACT = pa.schema(
    [
        ("id", pa.int64()),
        ("amount", pa.decimal128(38, 10)),
        ("seen_at", pa.timestamp("us", tz="UTC")),
        ("local_at", pa.timestamp("us")),
        ("day", pa.date32()),
        ("note", pa.string()),
        ("flag", pa.bool_()),
        ("blob", pa.binary()),
    ]
)


def test_exact_values_round_trip(lake):
    """Decimals stay exact, instants keep their microseconds, NULL stays NULL, any Unicode."""
    berlin = timezone(timedelta(hours=1))
    rows = [
        dict(
            id=1,
            amount=Decimal("1234567890123456789012345678.0123456789"),
            seen_at=datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=berlin),
            local_at=datetime(1999, 12, 31, 23, 59, 59, 1),
            day=datetime(2026, 2, 28).date(),
            note="naïve café 東京 🚀 \u0000nul \u202eRTL",
            flag=True,
            blob=b"\x00\xff",
        ),
        dict(
            id=2,
            amount=Decimal("-0.0000000001"),
            seen_at=None,
            local_at=None,
            day=None,
            note="",
            flag=None,
            blob=None,
        ),
        dict(
            id=3,
            amount=None,
            seen_at=datetime(1970, 1, 1, tzinfo=UTC),
            local_at=None,
            day=None,
            note=None,
            flag=False,
            blob=b"",
        ),
    ]
    d = Driver(lake, "src.s.exact", EXACT)
    d.run([event("c", pos(i + 1), ts(i + 1), **r) for i, r in enumerate(rows)])
    for layer in ("live", "forensic", "changelog"):
        got = [{k: r[k] for k in EXACT.names} for r in d.read(layer)]
        assert got == rows, layer
    live = d.read("live")
    assert live[0]["seen_at"].utcoffset() == timedelta(0)  # stored as UTC, same instant

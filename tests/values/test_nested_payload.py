"""Rows with nested and extreme values through the real core and a real lake, two batches.

The first update of a row with an array, interval or point column after its insert was
committed crashed the pipeline (`Data type list<element: int32> is not supported in join
non-key field v`): the forensic close and the key lookups joined whole rows. A timestamp at
the end of Delta's range crashed the bucket rewrite of another row (`OverflowError: date value
out of range`) while rounding its file statistic up. Both are driven here with one and two
key columns, as the decoder types them (docs/decoding.md).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tidemark.connectors.decode.storable import INTERVAL_STRUCT
from tidemark.kernel import columns as c
from tidemark.kernel.model import TableChanges
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.milestoning.core import milestone

TABLE = "src.public.nested"
POINT = pa.struct([("x", pa.float64()), ("y", pa.float64()), ("wkb", pa.large_binary())])
SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("region", pa.string()),
        ("ai", pa.list_(pa.int32())),
        ("iv", INTERVAL_STRUCT),
        ("p", POINT),
        ("m", pa.decimal128(10, 2)),
        ("b", pa.large_binary()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("d", pa.date32()),
        ("ats", pa.list_(pa.timestamp("us"))),
        (c.OP, pa.string()),
        (c.POSITION, pa.string()),
        (c.TX_ID, pa.string()),
        (c.SOURCE_TS, pa.timestamp("us", tz="UTC")),
    ]
)
END = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)  # +infinity's sentinel
START = datetime(1, 1, 1, tzinfo=UTC)


def _row(key: int, op: str, seq: int, *, note: int = 0) -> dict:
    return {
        "id": key,
        "region": f"r {key % 2}",
        "ai": [key, None, note],
        "iv": {"months": note, "days": -key, "nanoseconds": 1000},
        "p": {"x": float(key), "y": -1.5, "wkb": b"\x01"},
        "m": Decimal(f"{key}.{note:02d}"),
        "b": bytes([key, note]),
        "ts": END if key % 2 else START,
        "d": date(9999, 12, 31) if key % 3 else date(1, 1, 1),
        "ats": [datetime(9999, 12, 31, 23, 59, 59, 999999), None],
        c.OP: op,
        c.POSITION: f"{seq:040x}",
        c.TX_ID: str(seq),
        c.SOURCE_TS: datetime(2026, 1, 1, tzinfo=UTC).replace(microsecond=seq),
    }


def _commit(lake: Lake, batch_id: int, rows: list[dict], keys: tuple[str, ...]) -> None:
    events = pa.Table.from_pylist(rows, schema=SCHEMA)
    result = milestone(
        TableChanges(TABLE, keys, events),
        lake.current_versions(TABLE, events.select(list(keys))),
        batch_id=batch_id,
        ingested_at=datetime(2026, 1, 1, tzinfo=UTC),
        applied_position=lake.applied_position(TABLE),
    )
    lake.commit_batch(
        batch_id, [result], source_positions={"src": result.last_position}, started_at=START
    )


@pytest.mark.parametrize("keys", [("id",), ("id", "region")], ids=["one key", "two keys"])
def test_update_and_delete_committed_rows_with_nested_values(lake_root, keys) -> None:
    lake = Lake(lake_root(), app_id="t")
    _commit(lake, 1, [_row(k, "c", k) for k in range(1, 7)], keys)
    # a later batch: update some committed rows (nested values change), delete others
    _commit(
        lake,
        2,
        [_row(1, "u", 10, note=1), _row(2, "u", 11, note=2), _row(3, "d", 12), _row(4, "u", 13)],
        keys,
    )
    _commit(lake, 3, [_row(1, "u", 20, note=3), _row(5, "d", 21)], keys)  # after the restart
    lake.close()

    live = DeltaTable(f"{lake.root}/live/{TABLE}").to_pyarrow_table()
    got = {r["id"]: r for r in live.to_pylist()}
    assert sorted(got) == [1, 2, 4, 6]
    assert got[1]["ai"] == [1, None, 3] and got[1]["iv"]["months"] == 3
    assert got[2]["p"] == {"x": 2.0, "y": -1.5, "wkb": b"\x01"}
    assert got[1]["ts"] == END and got[4]["ts"] == START
    forensic = DeltaTable(f"{lake.root}/forensic/{TABLE}").to_pyarrow_table().to_pylist()
    versions = sorted((r["id"], r["m"], r[c.VALID_TO] is None) for r in forensic)
    assert versions == [
        (1, Decimal("1.00"), False),
        (1, Decimal("1.01"), False),
        (1, Decimal("1.03"), True),
        (2, Decimal("2.00"), False),
        (2, Decimal("2.02"), True),
        (3, Decimal("3.00"), False),
        (4, Decimal("4.00"), True),  # the update of 4 changed nothing: no version
        (5, Decimal("5.00"), False),
        (6, Decimal("6.00"), True),
    ]

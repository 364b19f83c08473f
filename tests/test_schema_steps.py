"""The pure parts of schema changes: the batcher carries table ops, a batch with ops is cut
into steps, Postgres types widen or not, and DDL values become the lake's values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from tests.batching_support import Clock, Marker, chunk, ids, p
from tidemark.connectors.postgres.ddl_types import json_values, lake_type, type_change
from tidemark.kernel.table_ops import TableOp
from tidemark.stream_processors import steps
from tidemark.stream_processors.batching import Batcher

A = "s.public.a"
B = "s.public.b"


def op(position: int, kind="add_column", table=A, tx="t2", **details) -> TableOp:
    return TableOp(table, kind, p(position), tx, 0, details)


def test_an_op_waits_for_its_transaction_and_reserves_ids_for_its_steps():
    batcher = Batcher(max_events=100, max_latency_ms=0, clock=Clock(), first_batch_id=7)
    decoded = chunk(*[(A, i, "t1") for i in (1, 2)], (A, 4, "t2"), markers=[Marker("END", "t1")])
    batcher.add(dataclasses.replace(decoded, ops=[op(3)]), source="s")
    first = batcher.poll(force=False)
    assert first is not None and first.ops == () and ids(first) == [1, 2]
    batcher.add(chunk(markers=[Marker("END", "t2")]), source="s")
    second = batcher.poll()
    assert second is not None and [o.position for o in second.ops] == [p(3)]
    assert second.batch_id == 8 and second.last_batch_id == 10
    assert batcher.next_batch_id == 11


def test_a_batch_of_ops_only_is_due():
    batcher = Batcher(max_events=100, max_latency_ms=0, clock=Clock())
    batcher.add(
        dataclasses.replace(chunk(markers=[Marker("END", "t2")]), ops=[op(5, "truncate")]),
        source="s",
    )
    batch = batcher.poll()
    assert batch is not None and batch.event_count == 0 and len(batch.ops) == 1


def _changes(*positions: int, table: str = A):
    return chunk(*[(table, i, "t") for i in positions]).changes[table]


def test_steps_cut_events_at_each_op_and_keep_an_ops_rows_with_it():
    changes = {A: _changes(1, 2, 6, 9), B: _changes(3, 8, table=B)}
    ops = [
        op(4, "add_column", fill="rows", column="c"),
        op(5, "rows", purpose="fill", column="c"),
        op(7, "truncate", table=B),
    ]
    planned = steps.plan(10, changes, ops, positions={"s": p(9)})
    assert [s.batch_id for s in planned] == [10, 11, 12, 13, 14]
    assert [sorted(s.changes) for s in planned] == [[A, B], [], [A], [], [A, B]]
    assert [len(s.ops) for s in planned] == [0, 2, 0, 1, 0]
    assert planned[0].changes[A].events.num_rows == 2 and planned[0].positions == {"s": p(3)}
    assert planned[-1].positions == {"s": p(9)}  # the batch's own, markers included


def test_rows_waiting_for_a_drop_are_dropped_unless_it_comes():
    rows = op(3, "rows", purpose="delete", pending_drop=42)
    assert steps.plan(1, {}, [rows], positions={"s": p(3)})[0].ops == ()
    confirmed = steps.plan(
        1, {}, [rows, op(4, "drop_partition", pending_drop=42)], positions={"s": p(4)}
    )
    assert [o.kind for s in confirmed for o in s.ops] == ["rows", "drop_partition"]


@pytest.mark.parametrize(
    ("old", "new", "widens"),
    [
        ("integer", "bigint", True),
        ("smallint", "numeric(12,2)", True),
        ("bigint", "integer", False),
        ("numeric(10,2)", "numeric(12,4)", True),
        ("numeric(12,4)", "numeric(10,2)", False),
        ("numeric(10,2)", "numeric(10,4)", False),  # fewer digits before the point
        ("character varying(10)", "text", True),
        ("text", "character varying(10)", False),
        ("real", "double precision", True),
        ("timestamp without time zone", "timestamp with time zone", True),
        ("timestamp with time zone", "timestamp without time zone", False),
        ("integer", "text", False),
    ],
)
def test_which_type_changes_widen(old, new, widens):
    verdict = type_change(old, new, time_zone="UTC", column="c")
    assert verdict.widens is widens
    if not widens:
        assert "`c`" in (verdict.reason or "") and old in (verdict.reason or "")


def test_timestamps_become_timestamptz_as_postgres_reads_them():
    verdict = type_change(
        "timestamp without time zone",
        "timestamp with time zone",
        time_zone="Europe/Paris",
        column="ts",
    )
    local = [datetime(2024, 3, 31, 2, 30), datetime(2024, 10, 27, 2, 30), datetime(2024, 1, 1)]
    converted = verdict.convert(pa.array(local, pa.timestamp("us"))).to_pylist()
    # Checked against Postgres 15: the gap takes the offset before it, the repeat the later.
    assert converted == [
        datetime(2024, 3, 31, 1, 30, tzinfo=UTC),
        datetime(2024, 10, 27, 1, 30, tzinfo=UTC),
        datetime(2023, 12, 31, 23, 0, tzinfo=UTC),
    ]


def test_ddl_values_become_the_lakes_values():
    assert json_values([Decimal("1.5"), None], "numeric(8,2)").to_pylist() == [
        Decimal("1.50"),
        None,
    ]
    assert json_values(["2024-01-01T10:00:00+02:00"], "timestamp with time zone").to_pylist() == [
        datetime(2024, 1, 1, 8, tzinfo=UTC)
    ]
    assert json_values(["infinity"], "date").to_pylist() == [date(9999, 12, 31)]
    assert json_values(["AQI="], "bytea").to_pylist() == [b"\x01\x02"]
    assert json_values([7], "integer", pa.int64()).type == pa.int64()
    assert lake_type("interval") is None
    with pytest.raises(ValueError, match="interval"):
        json_values(["1 day"], "interval")

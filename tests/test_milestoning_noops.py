"""No-op changes: an update, create or snapshot read that repeats the key's previous version
makes no forensic version and closes nothing (stream_processors/milestoning/noop.py)."""

from __future__ import annotations

import pyarrow as pa

from tests.milestoning_support import (
    ALICE,
    INGESTED,
    MemoryLake,
    changes,
    events,
    pos,
    rows_of,
    run,
    ts,
)
from tidemark.kernel.columns import BATCH_OUT, POSITION, VALID_TO
from tidemark.stream_processors.milestoning.core import milestone


def test_an_update_that_changes_nothing_makes_no_version_and_closes_nothing():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    result = run(lake, [{**ALICE, "op": "u", "pos": 5, "ts": 5}], batch_id=2)
    assert result.forensic_inserts.num_rows == 0
    assert result.forensic_closes.num_rows == 0
    assert lake.history((1,), ("name",)) == [("Alice", ts(1), None, 1, None)]
    # Live still follows the last change (same values, newer position).
    assert rows_of(result.live_upserts, ("id", POSITION)) == [{"id": 1, POSITION: pos(5)}]
    # ...and inside one batch: the second update repeats the first.
    result = run(
        lake,
        [
            {**ALICE, "name": "B", "op": "u", "pos": 8, "ts": 8},
            {**ALICE, "name": "B", "op": "u", "pos": 9, "ts": 9},
            {**ALICE, "name": "C", "op": "u", "pos": 10, "ts": 10},
        ],
        batch_id=3,
    )
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(1), ts(8), 1, 3),
        ("B", ts(8), ts(10), 3, 3),
        ("C", ts(10), None, 3, None),
    ]


def test_a_create_that_repeats_the_open_version_is_a_no_op():
    """A create of a key that is open with the same values (a replay or a snapshot overlap;
    the source cannot insert a key twice) makes no version; after a delete it re-opens."""
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    result = run(lake, [{**ALICE, "op": "c", "pos": 5, "ts": 5}], batch_id=2)
    assert result.forensic_inserts.num_rows == 0
    assert result.forensic_closes.num_rows == 0
    run(
        lake,
        [{**ALICE, "op": "d", "pos": 6, "ts": 6}, {**ALICE, "op": "c", "pos": 7, "ts": 7}],
        batch_id=3,
    )
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(1), ts(6), 1, 3),
        ("Alice", ts(7), None, 3, None),
    ]


def test_an_update_touching_only_a_toast_placeholder_is_a_no_op():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    result = run(
        lake, [{**ALICE, "note": None, "unchanged": ["note"], "op": "u", "pos": 5}], batch_id=2
    )
    assert result.forensic_inserts.num_rows == 0
    assert rows_of(result.live_upserts, ("note",)) == [{"note": "long text 1"}]


def test_columns_without_a_comparison_kernel_and_nan_floats():
    """Arrays (Postgres int[]) take the row-by-row path, only for candidate no-op rows."""
    schema = pa.schema(
        [("id", pa.int64()), ("tags", pa.list_(pa.int64())), ("score", pa.float64())]
    )

    def batch(rows, current=None, batch_id=1):
        table = events(rows, schema=schema)
        return milestone(changes(table), current, batch_id=batch_id, ingested_at=INGESTED)

    nan = float("nan")
    first = batch([{"id": 1, "tags": [1, 2], "score": nan, "op": "c"}])
    lake = MemoryLake()
    lake.apply(first)
    current = lake.current({(1,)}, schema=schema)
    result = batch(
        [
            {"id": 1, "tags": [1, 2], "score": nan, "op": "u", "pos": 5},  # no-op (NaN == NaN)
            {"id": 1, "tags": [1, 3], "score": nan, "op": "u", "pos": 6},  # a change
            {"id": 1, "tags": [1, 3], "score": nan, "op": "u", "pos": 7},  # no-op again
        ],
        current,
        batch_id=2,
    )
    assert rows_of(result.forensic_inserts, ("tags", POSITION)) == [
        {"tags": [1, 3], POSITION: pos(6)}
    ]
    assert rows_of(result.forensic_closes) == [{"id": 1, VALID_TO: ts(6), BATCH_OUT: 2}]

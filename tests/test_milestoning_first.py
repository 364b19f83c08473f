"""A bulk load's fast path gives exactly what the milestoning core gives for the same rows.

`first_versions` skips ordering and chaining when every key occurs once and the lake holds
none of them (the parallel loader's fresh tables); each layer's rows must be those of
`milestone(changes, None, ...)`, types and values, for keys of several shapes and every
kind of column value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from tidemark.connectors.postgres.exported import SnapshotPoint
from tidemark.sinks.schema import all_nullable
from tidemark.stream_processors.loading.events import snapshot_events
from tidemark.stream_processors.milestoning.core import milestone
from tidemark.stream_processors.milestoning.first import first_versions

POINT = SnapshotPoint(0x1EB6F70, 0x1EB7000, 700, 710, (703,), "2026-01-01T00:00:00+00:00")
ROWS = pa.table(
    {
        "a": pa.array([3, 1, 2, 1], pa.int32()),
        "b": ["x", "y", None, "z"],
        "amount": pa.array(
            [Decimal("1.50"), None, Decimal("-2.25"), Decimal("0")], pa.decimal128(10, 2)
        ),
        "tags": pa.array([["p"], [], None, ["q", None]], pa.list_(pa.string())),
        "seen": pa.array(
            [None, datetime(2026, 1, 1), datetime(1, 1, 1), datetime(2026, 5, 5)],
            pa.timestamp("us"),
        ),
    }
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LAYERS = ("changelog", "live_upserts", "live_deletes", "forensic_inserts", "forensic_closes")


@pytest.mark.parametrize("keys", [("a", "b"), ("b",)], ids=["two columns", "text"])
def test_first_versions_equal_the_cores_output(keys):
    rows = ROWS if keys != ("b",) else ROWS.filter(pa.compute.is_valid(ROWS.column("b")))
    changes = snapshot_events(
        "src.public.t",
        rows,
        key_columns=keys,
        point=POINT,
        first_seq=5,
        source_ts=datetime.now(UTC),
    )
    now = datetime.now(UTC)
    core = all_nullable(milestone(changes, None, batch_id=9, ingested_at=now))
    fast = all_nullable(first_versions(changes, batch_id=9, ingested_at=now))
    for name in LAYERS:
        theirs, ours = getattr(core, name), getattr(fast, name)
        assert theirs.schema == ours.schema, name
        order = [(k, "ascending") for k in keys]
        assert theirs.sort_by(order).to_pylist() == ours.sort_by(order).to_pylist(), name
    assert core.last_position == fast.last_position


def test_a_key_twice_is_refused():
    rows = ROWS.select(["a", "b"]).slice(0, 2)
    rows = pa.concat_tables([rows, rows])
    changes = snapshot_events(
        "src.public.t",
        rows,
        key_columns=("a",),
        point=POINT,
        first_seq=0,
        source_ts=datetime.now(UTC),
    )
    with pytest.raises(ValueError, match="occurs twice"):
        first_versions(changes, batch_id=1, ingested_at=datetime.now(UTC))


@pytest.mark.parametrize(
    ("keys", "unique"),
    [
        ([1, 2, 5, 9], True),  # increasing: proven in one pass
        ([1, 2, 9, 9], False),  # increasing but for a repeat at the end
        ([9, 1, 5, 2], True),  # no order: hashed
        ([2, 1, 5, 1], False),
        ([1, None, 2, 3], True),  # a NULL breaks the order's proof: hashed
        ([1, None, 2, None], False),
    ],
)
def test_a_single_key_column_is_checked_whatever_its_order(keys, unique):
    rows = pa.table({"a": pa.array(keys, pa.int64()), "b": ["w", "x", "y", "z"]})
    changes = snapshot_events(
        "src.public.t", rows, key_columns=("a",), point=POINT, first_seq=0, source_ts=NOW
    )
    if unique:
        assert first_versions(changes, batch_id=1, ingested_at=NOW).live_upserts.num_rows == 4
    else:
        with pytest.raises(ValueError, match="occurs twice"):
            first_versions(changes, batch_id=1, ingested_at=NOW)


@pytest.mark.parametrize(
    ("first", "count"),
    [(0, 20), (65_530, 20), (12_345_678, 20), (2**32 - 10, 10), (65_000, 140_000), (7, 1)],
)
def test_snapshot_positions_built_by_kernels_equal_one_by_one(first, count):
    """The loader's positions (one join per run of 65,536 sequence numbers) are the point's
    own, across one and several 16-bit boundaries and up to the last value."""
    point = SnapshotPoint(0x1EB6F70, 0x1EB7000, 700, 710, (703,), "2026-01-01", epoch=3)
    assert point.positions(first, count).to_pylist() == [
        point.position(first + i) for i in range(count)
    ]

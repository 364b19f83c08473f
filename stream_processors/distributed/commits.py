"""How a lane, or a topic's group of lanes, commits one batch (shared by `lane.py` and
`group.py`): batch ids that encode Kafka offsets, one milestoning pass, the bucketing a new
table gets, and a commit whose txn actions record every partition's next offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from tidemark.kernel.columns import Layer
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.sinks.layout import Bucketing
from tidemark.stream_processors.milestoning.core import milestone

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
PARTITION_BITS = 12
"""Batch ids are `next_offset << 12 | partition`: ordered like the offsets within a lane and
unique across the partitions of a table (the forensic layer's replay cleanup matches rows by
batch id, and lanes sharing buckets must never match each other's)."""


def batch_id_of(next_offset: int, partition: int) -> int:
    """The Delta txn version / `_tm_batch` of the batch that ends before `next_offset`."""
    if not 0 <= partition < 1 << PARTITION_BITS:
        raise ValueError(f"partition {partition} exceeds {1 << PARTITION_BITS} partitions")
    return next_offset << PARTITION_BITS | partition


def offset_of(batch_id: int) -> int:
    """The next offset to read, from a lane's txn version (0 when nothing is applied)."""
    return batch_id >> PARTITION_BITS


class RecordedLane(Protocol):
    """What a commit needs of each lane whose offset it records."""

    partition: int
    lane_app: str

    def app_for(self, layer: Layer) -> str: ...


def is_conflict(exc: BaseException) -> bool:
    """A concurrent-writer conflict (retry the batch), told apart without importing sinks."""
    return type(exc).__name__ in {"SinkCommitConflict", "CommitFailedError"}


def refresh_logs(lake: Any) -> None:
    """Catch the batch log and dead letters up with other writers before a retry: the
    layers' commit loop refreshes their handles, nothing refreshes these (two workers that
    both create `_tidemark/batches` kept losing with "Metadata changed since last commit")."""
    for handle in (lake.batch_log.handle, *lake.dead_letters._handles.values()):
        handle.refresh()


@contextmanager
def recording(
    lake: Any, table: str, layers: frozenset[Layer], lanes: Sequence[tuple[RecordedLane, int]]
) -> Iterator[None]:
    """Commits of `table` in this block record each lane's offset in every layer.

    The first lane's app id is the commit's own (the sinks skip a batch that it already
    holds; the batch log and dead letters use it too); the others ride along as extra txn
    actions of the same Delta commit, so one commit per layer carries the next offset of
    every partition it contains.
    """
    first = lanes[0][0]
    saved: list[tuple[Any, str, Any]] = []

    def swap(obj: Any, attr: str, value: Any) -> None:
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    for layer in layers:
        handle = lake.sink(table, layer).handle
        swap(handle, "app_id", first.app_for(layer))
        # Positions of several partitions interleave: the changelog's table-wide "drop at or
        # below the last position" must not apply (the lanes' offsets drop replays).
        swap(handle, "_position", None)
        swap(
            handle,
            "extra_transactions",
            {lane.app_for(layer): batch_id_of(end, lane.partition) for lane, end in lanes[1:]},
        )
    letters = dict(lake.dead_letters._handles)
    if first.lane_app != lake.app_id:  # a shared lake: its batch log and dead letters too
        for handle in (lake.batch_log.handle, *lake.dead_letters._handles.values()):
            swap(handle, "app_id", handle.app_id.replace(lake.app_id, first.lane_app, 1))
        swap(lake.dead_letters, "app_id", first.lane_app)
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)
        if first.lane_app != lake.app_id:
            lake.dead_letters._handles = letters  # drop handles opened under the lane's id


def write_batch(
    lake: Any,
    table: str,
    layers: frozenset[Layer],
    lanes: Sequence[tuple[RecordedLane, int]],
    batch_id: int,
    tables: Sequence[MilestonedTable],
    letters: Sequence[Any],
) -> None:
    """The batch's dead letters and tables, each commit recording every lane's offset."""
    with recording(lake, table, layers, lanes):
        if letters:
            lake.write_dead_letters(letters, batch_id=batch_id)
        if tables:
            lake.commit_batch(
                batch_id,
                tables,
                source_positions={t.table: t.last_position for t in tables},
                started_at=datetime.now(UTC),
                layers={t.table: layers for t in tables},
            )


def milestone_tables(
    lake: Any, changes: Mapping[str, TableChanges], batch_id: int, layers: frozenset[Layer]
) -> list[MilestonedTable]:
    """The core over each table's events, against the open versions the lake holds."""
    out = []
    now = datetime.now(UTC)
    for table, change in changes.items():
        events = change.events
        if events.num_rows == 0:
            continue
        keys = (
            events.select(list(change.key_columns)).group_by(list(change.key_columns)).aggregate([])
        )
        current = lake.current_versions(table, keys, layers)
        out.append(milestone(change, current, batch_id=batch_id, ingested_at=now))
    return out


def pin_bucketing(
    lake: Any,
    sink_of: Callable[[Layer], Any],
    layers: frozenset[Layer],
    tables: Sequence[MilestonedTable],
    *,
    partition_buckets: bool,
    pin: Callable[[Bucketing], Bucketing],
) -> None:
    """Give the live/forensic writers the table's bucketing with `pin` applied to buckets
    that follow the partition; a new table gets such buckets when `partition_buckets`."""
    for layer in (Layer.LIVE, Layer.FORENSIC):  # both: lookups read either
        sink = sink_of(layer)
        bucketing = sink.bucketing or Bucketing.from_json(sink.handle.description)
        if bucketing is None and tables and partition_buckets and layer in layers:
            sample = tables[0].live_upserts if layer is Layer.LIVE else tables[0].forensic_inserts
            extra = {"range_size": lake.range_size} if lake.range_size else {}
            bucketing = pin(Bucketing.for_keys(sample.schema, tables[0].key_columns, **extra))
        if bucketing is not None and bucketing.kind == "partition":
            bucketing = pin(bucketing)
        sink.bucketing = bucketing

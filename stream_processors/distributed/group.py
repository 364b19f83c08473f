"""One Delta commit per layer for all of a worker's partitions of a table.

A worker holding several partitions of a topic used to commit each partition's batch on its
own: per batch, partitions x layers Delta commits, each reading and rewriting its buckets.
A `TopicGroup` applies the pending records of every lane of the topic together: it decodes
them with one decoder, milestones them once and writes each layer in one commit that
records every partition's next offset as its own Delta txn action
(`<app>:<topic>:<partition>:<table>:<layer>`, the lane's app id). Recovery is unchanged:
each lane reads its own txn version back on assignment, exactly as if it had committed
alone; a commit is atomic, so either every partition in it moved or none did.

What stays per lane (`lane.py`): admitting records (replays, gaps, seek requests), the
transaction gate's cut, the zombie check (each lane's offsets are re-read before the
commit; a lane another worker moved is left out and re-synced), and a lane whose layers a
crash left at different offsets, which replays that range alone first.

With buckets that follow the Kafka partition, a row's bucket needs its partition: the
group knows it from the records (Debezium keys records by primary key, so a key lives in
one partition) and gives the sinks a key -> partition lookup (`Bucketing.by_partitions`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tidemark.kernel.columns import POSITION, Layer
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.stream_processors.distributed.commits import (
    MAX_CONFLICT_RETRIES,
    batch_id_of,
    is_conflict,
    milestone_tables,
    offset_of,
    pin_bucketing,
    refresh_logs,
    write_batch,
)
from tidemark.stream_processors.distributed.lane import (
    KafkaRecord,
    LaneOutcome,
    PartitionLane,
    _own_buckets,
    _table_lock,
    raw_records,
)
from tidemark.stream_processors.distributed.topics import SourceTopic

log = logging.getLogger(__name__)

_PART = "__tm_kafka_partition"
_ROW = "__tm_row"


@dataclass
class GroupOutcome(LaneOutcome):
    """A `LaneOutcome` for several partitions: `seeks` maps partition -> offset to re-read."""

    seeks: dict[int, int] = field(default_factory=dict)

    def merge(self, partition: int, other: LaneOutcome) -> None:
        self.events += other.events
        self.batches += other.batches
        self.dead_letters += other.dead_letters
        self.commit_seconds.extend(other.commit_seconds)
        for phase, seconds in other.phase_seconds.items():
            self.timed(phase, seconds)
        if other.seek_to is not None:
            self.seeks[partition] = other.seek_to


class TopicGroup:
    """Applies the records of a worker's lanes of one topic; one commit per layer.

    Args:
        spec: the topic.
        lake: the `Lake` shared by the topic's lanes (each lane has its own txn app ids).
        layers: the table's layers.
        decode: the topic's decoder (one per worker and topic; calls are serialized here).
        outputs: optional Kafka outputs (dead-letter topic, live topics).
        partition_buckets: a new table gets live/forensic buckets that follow the partition.
    """

    def __init__(
        self,
        spec: SourceTopic,
        *,
        lake: Any,
        layers: frozenset[Layer],
        decode: Callable[[Sequence[Any]], Any],
        outputs: Any = None,
        partition_buckets: bool = True,
    ) -> None:
        self.spec = spec
        self.lake = lake
        self.layers = frozenset(layers)
        self.decode = decode
        self.outputs = outputs
        self.partition_buckets = partition_buckets
        self._lock = threading.Lock()
        self._seen: dict[Layer, int | None] = {}

    def forget_rows(self) -> None:
        """Drop cached bucket rows (a partition moved: another worker may have written)."""
        with self._lock:
            for layer in self.layers:
                sink = self.lake.sink(self.spec.table, layer)
                if hasattr(sink, "rows"):
                    sink.rows.clear()

    def wait_idle(self) -> None:
        """Return once no batch of this topic is being applied."""
        with self._lock:
            pass

    def apply(self, work: Mapping[PartitionLane, Sequence[KafkaRecord]]) -> GroupOutcome:
        """Admit each lane's records and commit what may be committed (blocking)."""
        with self._lock:
            outcome = GroupOutcome()
            ready: list[tuple[PartitionLane, int]] = []
            for lane, records in sorted(work.items(), key=lambda item: item[0].partition):
                with lane._lock:
                    seek = lane.admit(records)
                    if seek is not None:
                        outcome.seeks[lane.partition] = seek
                    if lane.boundary is not None:  # after a crash: that range alone first
                        outcome.merge(lane.partition, lane._apply([]))
                        if lane.boundary is not None or not lane.has_pending:
                            continue
                    count = lane._cut() if lane.has_pending else 0
                    if count:
                        ready.append((lane, count))
            if ready:
                self._commit(ready, outcome)
            return outcome

    # -- the commit ------------------------------------------------------------------------

    def _refresh(self) -> None:
        for layer in sorted(self.layers):
            sink = self.lake.sink(self.spec.table, layer)
            sink.handle.refresh()
            dt = sink.handle.dt
            version = None if dt is None else dt.version()
            if (
                version != self._seen.get(layer)
                and hasattr(sink, "rows")
                and not _own_buckets(sink)
            ):
                sink.rows.clear()  # another worker wrote shared buckets
            self._seen[layer] = version

    def _unmoved(
        self, ready: Sequence[tuple[PartitionLane, int]], outcome: GroupOutcome
    ) -> list[tuple[PartitionLane, list[KafkaRecord], int]]:
        """The lanes whose lake offsets are still where they left them (zombie check)."""
        out = []
        for lane, count in ready:
            chunk = lane._pending[:count]
            end = chunk[-1].offset + 1
            offsets = [offset_of(lane.applied(layer)) for layer in self.layers]
            low, high = min(offsets), max(offsets)
            if low != lane.committed or high not in (lane.committed, end):
                log.warning(
                    "lane %s: the lake moved to offsets %s..%s under us (expected "
                    "%s); dropping its records",
                    lane.name,
                    low,
                    high,
                    lane.committed,
                )
                outcome.seeks[lane.partition] = lane.sync()
                continue
            out.append((lane, chunk, end))
        return out

    def _commit(self, ready: Sequence[tuple[PartitionLane, int]], outcome: GroupOutcome) -> None:
        started = mark = time.perf_counter()
        self._refresh()
        lanes = self._unmoved(ready, outcome)
        outcome.timed("refresh", time.perf_counter() - mark)
        if not lanes:
            return
        mark = time.perf_counter()
        changes, letters, partitions = self._decode(lanes)
        outcome.timed("decode", time.perf_counter() - mark)
        batch_id = batch_id_of(lanes[0][2], lanes[0][0].partition)
        shared = not all(
            _own_buckets(self.lake.sink(self.spec.table, layer)) for layer in self.layers
        )
        with _table_lock(self.spec.table) if shared else nullcontext():
            tables = self._commit_locked(lanes, batch_id, changes, letters, partitions, outcome)
        for lane, chunk, end in lanes:
            lane._pending = lane._pending[len(chunk) :]
            if tables:
                lane.committed = end
            lane._seen = dict(self._seen)
        if self.outputs is not None:
            if letters:
                self.outputs.dead_letters(letters)
            for table in tables:
                self.outputs.live(table)
        outcome.events += sum(t.changelog.num_rows for t in tables)
        outcome.batches += 1 if tables else 0
        outcome.dead_letters += len(letters)
        outcome.commit_seconds.append(time.perf_counter() - started)
        log.info(
            "topic %s: batch %s committed (%s partitions, %s records)",
            self.spec.topic,
            batch_id,
            len(lanes),
            sum(len(c) for _, c, _ in lanes),
        )

    def _commit_locked(
        self,
        lanes: Sequence[tuple[PartitionLane, list[KafkaRecord], int]],
        batch_id: int,
        changes: Mapping[str, TableChanges],
        letters: list[Any],
        partitions: pa.Table,
        outcome: GroupOutcome,
    ) -> list[MilestonedTable]:
        # Milestoned once: a retry must not milestone again, since the layers that did
        # commit would make the batch's own events look like replays. Other workers cannot
        # change the versions it read (their keys are in other partitions).
        mark = time.perf_counter()
        self._pin_buckets(partitions, ())
        tables = milestone_tables(self.lake, changes, batch_id, self.layers)
        self._pin_buckets(partitions, tables)
        outcome.timed("milestone", time.perf_counter() - mark)
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            mark = time.perf_counter()
            try:
                write_batch(
                    self.lake,
                    self.spec.table,
                    self.layers,
                    [(lane, end) for lane, _, end in lanes],
                    batch_id,
                    tables,
                    letters,
                )
            except Exception as exc:
                if not is_conflict(exc) or attempt == MAX_CONFLICT_RETRIES:
                    raise
                log.warning(
                    "topic %s: batch %s conflicted (attempt %s); retrying",
                    self.spec.topic,
                    batch_id,
                    attempt,
                )
                time.sleep(0.05 * attempt)
                self._refresh()
                refresh_logs(self.lake)
                continue
            outcome.timed("commit", time.perf_counter() - mark)
            break
        for layer in self.layers:
            dt = self.lake.sink(self.spec.table, layer).handle.dt
            self._seen[layer] = None if dt is None else dt.version()
        return tables

    def _decode(
        self, lanes: Sequence[tuple[PartitionLane, list[KafkaRecord], int]]
    ) -> tuple[dict[str, TableChanges], list[Any], pa.Table]:
        """Decode each lane's chunk; merge per table; a key -> partition table."""
        parts: dict[str, list[pa.Table]] = {}
        keys: dict[str, tuple[str, ...]] = {}
        owners: list[pa.Table] = []
        letters: list[Any] = []
        for lane, chunk, _ in lanes:
            decoded = self.decode(raw_records(lane.spec.topic, lane.partition, chunk))
            letters.extend(decoded.dead_letters)
            for name, change in decoded.changes.items():
                events = change.events
                if events.num_rows == 0:
                    continue
                parts.setdefault(name, []).append(events)
                keys[name] = change.key_columns
                if name == self.spec.table and change.key_columns:
                    owned = events.select(list(change.key_columns))
                    owners.append(
                        owned.append_column(
                            _PART, pa.repeat(pa.scalar(lane.partition, pa.int64()), owned.num_rows)
                        )
                    )
        changes = {}
        for name, tables in parts.items():
            events = (
                tables[0]
                if len(tables) == 1
                else pa.concat_tables(tables, promote_options="permissive").sort_by(POSITION)
            )
            changes[name] = TableChanges(name, keys[name], events)
        partitions = (
            pa.concat_tables(owners, promote_options="permissive")
            if owners
            else pa.table({_PART: pa.array([], pa.int64())})
        )
        if owners:
            partitions = partitions.group_by(partitions.column_names).aggregate([])
        return changes, letters, partitions

    def _pin_buckets(self, partitions: pa.Table, tables: Sequence[MilestonedTable]) -> None:
        """Each row in the buckets of its own partition (a new table's buckets follow them)."""
        lookup = _partition_lookup(partitions)
        pin_bucketing(
            self.lake,
            lambda layer: self.lake.sink(self.spec.table, layer),
            self.layers,
            tables,
            partition_buckets=self.partition_buckets,
            pin=lambda b: b.by_partitions(lookup),
        )


def _partition_lookup(partitions: pa.Table) -> Callable[[pa.Table, Sequence[str]], pa.Array]:
    """`(keys, key_columns) -> partition per row`, from the batch's key -> partition table."""

    def partition_of(keys: pa.Table, key_columns: Sequence[str]) -> pa.Array:
        rows = keys.select(list(key_columns))
        rows = rows.append_column(_ROW, pa.array(range(rows.num_rows), pa.int64()))
        joined = rows.join(partitions, list(key_columns), join_type="left outer")
        if joined.num_rows != rows.num_rows:
            raise ValueError(
                "a key is in two Kafka partitions in one batch; was the topic repartitioned?"
            )
        found = joined.sort_by(_ROW).column(_PART)
        if found.null_count:
            raise ValueError("a key of the batch has no Kafka partition")
        return found.combine_chunks()

    return partition_of

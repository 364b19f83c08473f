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
commit; a lane another worker moved is left out and re-synced), a lane whose layers a
crash left at different offsets, which replays that range alone first, and the replay
guard: each lane's events are milestoned against its own partition's watermark.

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

import pyarrow as pa

from tidemark.connectors.decode.decoder import DecodedBatch
from tidemark.kernel.columns import POSITION, Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.kernel.records import RawRecord
from tidemark.kernel.replay import Watermark, per_event
from tidemark.sinks.errors import SinkCommitConflict
from tidemark.sinks.writer import StreamWriter
from tidemark.stream_processors.distributed.commits import (
    MAX_CONFLICT_RETRIES,
    LaneBatch,
    Outcome,
    batch_id_of,
    highest_position,
    milestone_tables,
    write_batch,
)
from tidemark.stream_processors.distributed.lane import (
    KafkaRecord,
    Outputs,
    PartitionLane,
    publish,
    table_lock,
)
from tidemark.stream_processors.distributed.topics import SourceTopic

log = logging.getLogger(__name__)

_PART = "__tm_kafka_partition"
_ROW = "__tm_row"
_MARK = "__tm_watermark"


class TopicGroup:
    """Applies the records of a worker's lanes of one topic; one commit per layer.

    Args:
        spec: the topic.
        lake: the lake shared by the topic's lanes (each lane is its own stream in it).
        layers: the table's layers.
        decode: the topic's decoder (one per worker and topic, given to its lanes too;
            calls are serialized here).
        outputs: optional Kafka outputs (dead-letter topic, live topics).
        partition_buckets: a new table gets live/forensic buckets that follow the partition.
    """

    def __init__(
        self,
        spec: SourceTopic,
        *,
        lake: StreamWriter,
        layers: frozenset[Layer],
        decode: Callable[[Sequence[RawRecord]], DecodedBatch] | None = None,
        outputs: Outputs | None = None,
        partition_buckets: bool = True,
    ) -> None:
        self.spec = spec
        self.lake = lake
        self.layers = frozenset(layers)
        self.decode = decode
        self.outputs = outputs
        self.partition_buckets = partition_buckets
        self._lock = threading.Lock()

    def forget_rows(self) -> None:
        """Drop cached bucket rows (a partition moved: another worker may have written)."""
        with self._lock:
            self.lake.forget_cache(self.spec.table)

    def wait_idle(self) -> None:
        """Return once no batch of this topic is being applied."""
        with self._lock:
            pass

    def apply(self, work: Mapping[PartitionLane, Sequence[KafkaRecord]]) -> Outcome:
        """Admit each lane's records and commit what may be committed (blocking)."""
        with self._lock:
            outcome = Outcome()
            ready: list[tuple[PartitionLane, int]] = []
            for lane, records in sorted(work.items(), key=lambda item: item[0].partition):
                with lane.lock:
                    seek = lane.admit(records)
                    if seek is not None:
                        outcome.seeks[lane.partition] = seek
                    if lane.boundary is not None:  # after a crash: that range alone first
                        outcome.merge(lane.partition, lane.apply_locked([]))
                        if lane.boundary is not None or not lane.has_pending:
                            continue
                    count = lane.cut()
                    if count:
                        ready.append((lane, count))
            if ready:
                self._commit(ready, outcome)
            return outcome

    # -- the commit ------------------------------------------------------------------------

    def _unmoved(
        self, ready: Sequence[tuple[PartitionLane, int]], outcome: Outcome
    ) -> list[tuple[PartitionLane, int, int]]:
        """(lane, records, end) of the lanes whose lake offsets are still where they left
        them (zombie check; the lake was refreshed just before)."""
        out = []
        for lane, count in ready:
            end = lane.pending(count)[-1].offset + 1
            if lane.moved(end, refresh=False):
                outcome.seeks[lane.partition] = lane.sync()
                continue
            out.append((lane, count, end))
        return out

    def _commit(self, ready: Sequence[tuple[PartitionLane, int]], outcome: Outcome) -> None:
        started = mark = time.perf_counter()
        self.lake.refresh(self.spec.table, self.layers)
        lanes = self._unmoved(ready, outcome)
        outcome.timed("refresh", time.perf_counter() - mark)
        if not lanes:
            return
        mark = time.perf_counter()
        changes, watermarks, letters, partitions, batches = self._decode(lanes)
        outcome.timed("decode", time.perf_counter() - mark)
        batch_id = batch_id_of(lanes[0][2], lanes[0][0].partition)
        shared = self.lake.shares_buckets(self.spec.table, self.layers)
        with table_lock(self.spec.table) if shared else nullcontext():
            tables = self._commit_locked(
                batches, batch_id, changes, watermarks, letters, partitions, outcome
            )
        for lane, count, end in lanes:
            lane.settle(count, end, committed=bool(tables))
        outcome.committed(tables, letters, started)
        log.info(
            "topic %s: batch %s committed (%s partitions, %s records)",
            self.spec.topic,
            batch_id,
            len(lanes),
            sum(count for _, count, _ in lanes),
        )

    def _commit_locked(
        self,
        lanes: Sequence[LaneBatch],
        batch_id: int,
        changes: Mapping[str, TableChanges],
        watermarks: Mapping[str, Watermark],
        letters: list[DeadLetter],
        partitions: pa.Table,
        outcome: Outcome,
    ) -> list[MilestonedTable]:
        # Milestoned once: a retry must not milestone again, since the layers that did
        # commit would make the batch's own events look like replays. Other workers cannot
        # change the versions it read (their keys are in other partitions).
        mark = time.perf_counter()
        self._pin_buckets(partitions, ())
        tables = milestone_tables(self.lake, changes, batch_id, self.layers, watermarks)
        self._pin_buckets(partitions, tables)
        outcome.timed("milestone", time.perf_counter() - mark)
        # Published before the commit (and after the zombie check): a worker killed between
        # the two reads the batch again on restart and publishes it again, so every change
        # that reaches the lake reaches the topics (docs/distributed.md, live topics).
        publish(self.outputs, tables, letters)
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            mark = time.perf_counter()
            try:
                write_batch(self.lake, self.layers, lanes, batch_id, tables, letters)
            except SinkCommitConflict:
                if attempt == MAX_CONFLICT_RETRIES:
                    raise
                log.warning(
                    "topic %s: batch %s conflicted (attempt %s); retrying",
                    self.spec.topic,
                    batch_id,
                    attempt,
                )
                time.sleep(0.05 * attempt)
                self.lake.refresh(self.spec.table, self.layers)
                continue
            outcome.timed("commit", time.perf_counter() - mark)
            break
        return tables

    def _decode(
        self, lanes: Sequence[tuple[PartitionLane, int, int]]
    ) -> tuple[
        dict[str, TableChanges],
        dict[str, Watermark],
        list[DeadLetter],
        pa.Table,
        list[LaneBatch],
    ]:
        """Decode each lane's chunk and merge per table, each event with its partition's
        watermark; also a key -> partition table and each lane's part of the commit."""
        parts: dict[str, list[pa.Table]] = {}
        keys: dict[str, tuple[str, ...]] = {}
        owners: list[pa.Table] = []
        letters: list[DeadLetter] = []
        batches = []
        for lane, count, end in lanes:
            decoded = lane.decode(lane.pending(count))
            letters.extend(decoded.dead_letters)
            watermark = lane.watermark()
            top: str | None = None
            for name, change in decoded.changes.items():
                events = change.events
                if events.num_rows == 0:
                    continue
                high = highest_position(events)
                top = high if top is None or (high is not None and high > top) else top
                marks = per_event(watermark, events.num_rows)
                parts.setdefault(name, []).append(events.append_column(_MARK, marks))
                keys[name] = change.key_columns
                if name == self.spec.table and change.key_columns:
                    owned = events.select(list(change.key_columns))
                    owners.append(
                        owned.append_column(
                            _PART, pa.repeat(pa.scalar(lane.partition, pa.int64()), owned.num_rows)
                        )
                    )
            batches.append(LaneBatch(lane, end, top))
        changes: dict[str, TableChanges] = {}
        watermarks: dict[str, Watermark] = {}
        for name, tables in parts.items():
            events = (
                tables[0]
                if len(tables) == 1
                else pa.concat_tables(tables, promote_options="permissive").sort_by(POSITION)
            )
            watermarks[name] = events.column(_MARK).combine_chunks()
            events = events.drop_columns([_MARK])
            changes[name] = TableChanges(name, keys[name], events)
        partitions = (
            pa.concat_tables(owners, promote_options="permissive")
            if owners
            else pa.table({_PART: pa.array([], pa.int64())})
        )
        if owners:
            partitions = partitions.group_by(partitions.column_names).aggregate([])
        return changes, watermarks, letters, partitions, batches

    def _pin_buckets(self, partitions: pa.Table, tables: Sequence[MilestonedTable]) -> None:
        """Each row in the buckets of its own partition (a new table's buckets follow them)."""
        lookup = _partition_lookup(partitions)
        self.lake.pin_buckets(
            self.spec.table,
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

"""One Kafka topic-partition applied to the lake exactly once, without trusting Kafka commits.

A *lane* is one partition of one table's topic. It owns its own Delta transaction app ids
(`<pipeline app id>:<topic>:<partition>:<table>:<layer>`, in its own `Lake` or in one shared
by the topic's lanes, whose batches then commit together: `group.py`), and a batch's
id encodes the Kafka offset after its last record (`next_offset << 12 | partition`). So every
Delta commit records the offsets it contains, and `transaction_version(app id)` of a layer
gives the next offset to read:

- on assignment the lane reads that version back and the consumer seeks there;
- records below it were read before (a rebalance, a commit the consumer lost) and are
  dropped; records Kafka Connect re-sent at *new* offsets after a crash are dropped by the
  replay guard instead: their source positions are at or below the partition's watermark
  (`commits.py`), whatever their keys became since;
- a record above it is a gap (a consumer that committed past unapplied records): the lane
  asks the consumer to seek back, and accepts a gap only when re-reading confirms it;
- if a crash left the layers at different versions, the first batch is cut exactly at the
  highest one, so the layers that hold it skip it and the others catch up;
- before each commit the lane re-reads the versions: if another worker moved the lane (a
  zombie after a rebalance), it drops its batch and re-reads from the lake's offset. Delta
  itself rejects two concurrent commits with the same app id (`CommitFailedError`).

Lanes of one table commit concurrently; they touch disjoint keys (Debezium keys records by
primary key, so a key lives in one partition). Conflicts on shared files are retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Protocol

from tidemark.connectors.decode.decoder import DecodedBatch, Decoder
from tidemark.kernel.columns import Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.model import MilestonedTable
from tidemark.kernel.records import RawRecord
from tidemark.sinks.errors import SinkCommitConflict
from tidemark.sinks.writer import StreamWriter
from tidemark.stream_processors.distributed.commits import (
    MAX_CONFLICT_RETRIES,
    LaneBatch,
    Outcome,
    batch_id_of,
    highest_position,
    milestone_tables,
    offset_of,
    write_batch,
)
from tidemark.stream_processors.distributed.topics import SourceTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One consumed record of the lane's partition."""

    offset: int
    key: bytes | None
    value: bytes | None


class Outputs(Protocol):
    """Where a lane publishes besides the lake (Kafka topics); see `outputs.py`."""

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...
    def live(self, table: MilestonedTable) -> None: ...


class TxGate(Protocol):
    """Decides how much of a lane's pending records may commit (see `txgate.py`)."""

    def committable(self, lane: str, table: str, records: Sequence[KafkaRecord]) -> int: ...


class PartitionLane:
    """Applies one topic-partition's records to the lake, exactly once.

    Args:
        spec: the table's topic, lake name, source kind and key override.
        partition: the Kafka partition.
        lake: the lake (`sinks.lake.Lake`), the lane's own or shared by the topic's lanes.
        layers: the layers this table is written to.
        outputs: optional Kafka outputs (dead-letter topic, live topics).
        gate: optional transaction gate (holds back records of unfinished transactions).
        partition_buckets: new live/forensic tables get buckets that follow the partition.
        verify_gap: `(topic, partition, offset) -> first existing offset` (`gaps.py`);
            without it a gap is never accepted (the lane keeps asking to seek back).
        decode: the decoder (`connectors.decode.decode_records`), injectable for tests.
        lane_app: this lane's stream (txn app id prefix) in a lake shared by the topic's
            lanes (`group.py`); None when `lake` is the lane's own (its app id is the prefix).
    """

    def __init__(
        self,
        spec: SourceTopic,
        partition: int,
        *,
        lake: StreamWriter,
        layers: frozenset[Layer],
        outputs: Outputs | None = None,
        gate: TxGate | None = None,
        partition_buckets: bool = True,
        verify_gap: Callable[[str, int, int], int | None] | None = None,
        decode: Callable[[Sequence[RawRecord]], DecodedBatch] | None = None,
        lane_app: str | None = None,
    ) -> None:
        self.lane_app = lane_app or lake.app_id
        self._owns_lake = lane_app is None
        self.spec = spec
        self.partition = partition
        self.name = f"{spec.topic}/{partition}"
        self.lake = lake
        self.layers = frozenset(layers)
        self.outputs = outputs
        self.gate = gate
        self.partition_buckets = partition_buckets
        self.verify_gap = verify_gap
        self.lock = threading.Lock()
        """Held while the lane admits or commits records (a group takes it too)."""
        self._awaiting: int | None = None
        self._awaiting_since = 0.0
        self._decode = decode or lane_decoder(spec)
        self._pending: list[KafkaRecord] = []
        self.committed = 0
        self.next_offset = 0
        self.boundary: int | None = None
        self.sync()

    # -- lake state ------------------------------------------------------------------------

    def applied(self, layer: Layer) -> int:
        """The batch id (txn version) this lane last committed to `layer` (0: none)."""
        return self.lake.applied_batch(self.spec.table, layer, self.lane_app)

    def watermark(self) -> str | None:
        """The replay guard's watermark of this partition: the highest source position its
        layers hold (the lowest layer's), None when one holds nothing of it."""
        return self.lake.applied_position(self.spec.table, self.layers, stream=self.lane_app)

    def lake_offsets(self, *, refresh: bool = True) -> tuple[int, int]:
        """(lowest, highest) next offset recorded by this lane's layers.

        `refresh` first catches the lake up with other writers (another lane of the table
        may have written buckets this lane's cache holds; the lake drops those)."""
        if refresh:
            self.lake.refresh(self.spec.table, self.layers)
        versions = [offset_of(self.applied(layer)) for layer in sorted(self.layers)]
        return min(versions), max(versions)

    def sync(self) -> int:
        """Re-read the lane's offsets from the lake; returns the offset to consume from."""
        low, high = self.lake_offsets()
        self.committed = self.next_offset = low
        self.boundary = high if high > low else None
        self._pending.clear()
        self._awaiting = None
        if self.boundary:
            log.warning(
                "lane %s: layers at offsets %s..%s after a crash; replaying exactly "
                "that range first",
                self.name,
                low,
                high,
            )
        return low

    def moved(self, end: int, *, refresh: bool = True) -> bool:
        """True when another worker moved the lane since it last looked (a zombie check):
        its batch ending before `end` must be dropped and the lane re-synced."""
        low, high = self.lake_offsets(refresh=refresh)
        if low == self.committed and high in (self.committed, end):
            return False
        log.warning(
            "lane %s: the lake moved to offsets %s..%s under us (expected %s); dropping "
            "records up to %s",
            self.name,
            low,
            high,
            self.committed,
            end,
        )
        return True

    # -- consuming -------------------------------------------------------------------------

    def admit(self, records: Sequence[KafkaRecord]) -> int | None:
        """Add consumed records to the pending batch; returns an offset to seek to, if any.

        A record above the expected offset means the consumer skipped records (a commit past
        unapplied ones): the lane asks for a seek back and drops what arrives above the
        expected offset until the consumer delivers it. A gap is accepted only when
        `verify_gap` confirms, by fetching that offset directly, that it does not exist
        (compaction, transaction markers); never on a guess.
        """
        for record in records:
            if record.offset < self.next_offset:
                continue  # read before: already applied or already pending
            if record.offset > self.next_offset:
                if (
                    self._awaiting == self.next_offset
                    and time.monotonic() - self._awaiting_since < 5.0
                ):
                    return None  # fetched before our seek: drop, the re-read is coming
                first = self._real_gap(record.offset)
                if first is None:
                    return self._seek_back(record.offset)
                log.warning(
                    "lane %s: offsets %s..%s do not exist (compaction or "
                    "transaction markers); going on",
                    self.name,
                    self.next_offset,
                    first - 1,
                )
                if record.offset > first:
                    return self._seek_back(record.offset)
            self._pending.append(record)
            self.next_offset = record.offset + 1
            self._awaiting = None
        return None

    def _seek_back(self, got: int) -> int | None:
        """Ask for a seek back; `admit` drops stale records for 5 s before asking again."""
        now = time.monotonic()
        log.warning(
            "lane %s: gap, got offset %s, expected %s; seeking back",
            self.name,
            got,
            self.next_offset,
        )
        self._awaiting, self._awaiting_since = self.next_offset, now
        return self.next_offset

    def _real_gap(self, got: int) -> int | None:
        """The first existing offset when `next_offset` truly does not exist, else None."""
        if self.verify_gap is None:
            return None
        first = self.verify_gap(self.spec.topic, self.partition, self.next_offset)
        return first if first is not None and first > self.next_offset else None

    @property
    def has_pending(self) -> bool:
        """Records read but not committed yet (held for a transaction or a boundary)."""
        return bool(self._pending)

    def pending(self, count: int) -> list[KafkaRecord]:
        """The first `count` pending records (the next batch, once `cut` said how many)."""
        return self._pending[:count]

    def settle(self, count: int, end: int, *, committed: bool) -> None:
        """After a commit attempt of the first `count` pending records (ending before
        `end`): they leave the pending list; the lake holds them when `committed`."""
        del self._pending[:count]
        if committed:
            self.committed = end
        if self.boundary is not None and end >= self.boundary:
            self.boundary = None

    def cut(self) -> int:
        """How many pending records form the next batch (0: wait for more)."""
        pending = self._pending
        if not pending:
            return 0
        if self.boundary is not None:
            if pending[-1].offset + 1 < self.boundary:
                return 0  # the crash-boundary batch must be replayed whole
            return sum(1 for r in pending if r.offset < self.boundary)
        if self.gate is not None:
            return self.gate.committable(self.name, self.spec.table, pending)
        return len(pending)

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """The lane's records decoded (the topic's decoder; callers serialize calls)."""
        return self._decode(raw_records(self.spec.topic, self.partition, records))

    def apply(self, records: Sequence[KafkaRecord]) -> Outcome:
        """Admit `records` and commit what may be committed (blocking: run in a thread)."""
        with self.lock:
            return self.apply_locked(records)

    def apply_locked(self, records: Sequence[KafkaRecord]) -> Outcome:
        """`apply`, with `lock` held by the caller (a group replays a crash boundary)."""
        outcome = Outcome()
        seek = self.admit(records)
        while self._pending:
            count = self.cut()
            if count == 0:
                break
            if not self._commit(count, outcome):
                outcome.seek_to = self.sync()
                return outcome
        if seek is not None:
            outcome.seek_to = seek
        return outcome

    def _commit(self, count: int, outcome: Outcome) -> bool:
        """Commit the next `count` records; False when another worker moved the lane."""
        started = time.perf_counter()
        chunk = self.pending(count)
        end = chunk[-1].offset + 1  # the next offset after this batch
        decoded = self.decode(chunk)
        outcome.timed("decode", time.perf_counter() - started)
        # Buckets that follow the partition are this lane's alone: no lock, no conflict.
        shared = self.lake.shares_buckets(self.spec.table, self.layers)
        with table_lock(self.spec.table) if shared else nullcontext():
            return self._commit_locked(count, end, decoded, outcome, started)

    def _commit_locked(
        self, count: int, end: int, decoded: DecodedBatch, outcome: Outcome, started: float
    ) -> bool:
        batch_id = batch_id_of(end, self.partition)
        letters = list(decoded.dead_letters)
        position = max(
            (p for c in decoded.changes.values() if (p := highest_position(c.events))),
            default=None,
        )
        tables: list[MilestonedTable] | None = None
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            mark = time.perf_counter()
            moved = self.moved(end)
            outcome.timed("refresh", time.perf_counter() - mark)
            if moved:
                self.settle(count, end, committed=False)
                return False
            if tables is None:  # once: on a retry, layers that did commit would make the
                # batch's own events look like replays
                mark = time.perf_counter()
                self._pin_buckets(())  # existing tables: current_versions needs the partition
                watermark = self.watermark()
                tables = milestone_tables(
                    self.lake,
                    decoded.changes,
                    batch_id,
                    self.layers,
                    {name: watermark for name in decoded.changes},
                )
                outcome.timed("milestone", time.perf_counter() - mark)
                self._pin_buckets(tables)  # a new table: its layout is chosen here
                # before the commit: a kill in between publishes the batch again (group.py)
                publish(self.outputs, tables, letters)
            mark = time.perf_counter()
            try:
                lanes = [LaneBatch(self, end, position)]
                write_batch(self.lake, self.layers, lanes, batch_id, tables, letters)
            except SinkCommitConflict:
                if attempt == MAX_CONFLICT_RETRIES:
                    raise
                log.warning(
                    "lane %s: batch %s conflicted (attempt %s); retrying",
                    self.name,
                    batch_id,
                    attempt,
                )
                time.sleep(0.05 * attempt)
                continue
            outcome.timed("commit", time.perf_counter() - mark)
            break
        assert tables is not None
        self.settle(count, end, committed=bool(tables))
        outcome.committed(tables, letters, started)
        log.info("lane %s: batch %s committed (%s records)", self.name, batch_id, count)
        return True

    def _pin_buckets(self, tables: Sequence[MilestonedTable]) -> None:
        """This partition pinned in the table's bucketing (a new table's buckets follow it)."""
        self.lake.pin_buckets(
            self.spec.table,
            self.layers,
            tables,
            partition_buckets=self.partition_buckets,
            pin=lambda b: b.by_partition(self.partition),
        )

    def close(self) -> None:
        if self._owns_lake:
            self.lake.close()


def publish(
    outputs: Outputs | None, tables: Sequence[MilestonedTable], letters: Sequence[DeadLetter]
) -> None:
    """Publish a batch to the Kafka outputs, right before its lake commit: a worker killed
    in between publishes it again when it applies the batch again, so nothing that reached
    the lake is missing downstream; repeats are dropped by `_tm_position` downstream."""
    if outputs is None:
        return
    if letters:
        outputs.dead_letters(letters)
    for table in tables:
        outputs.live(table)


def raw_records(topic: str, partition: int, chunk: Sequence[KafkaRecord]) -> list[RawRecord]:
    """Kafka records as the decoder takes them (enveloped JSON text, origin = offset)."""
    origin = f"kafka:{topic}/{partition}@"
    return [
        RawRecord(
            topic,
            None if r.key is None else r.key.decode("utf-8", "replace"),
            None if r.value is None else r.value.decode("utf-8", "replace"),
            f"{origin}{r.offset}",
        )
        for r in chunk
    ]


def lane_decoder(spec: SourceTopic) -> Callable[[Sequence[RawRecord]], DecodedBatch]:
    """A decoder of the lane's own: decoders keep per-source position state (snapshot
    counters), which must not be shared across lanes that run in parallel threads."""
    keys = {spec.table: spec.key_columns} if spec.key_columns else {}
    return Decoder(spec.kind, keys).decode


_TABLE_LOCKS: dict[str, threading.Lock] = {}
_TABLE_LOCKS_GUARD = threading.Lock()


def table_lock(table: str) -> threading.Lock:
    """Lanes of one table in one process commit one at a time: they would only conflict
    on the table's shared files (and retry); decoding still runs in parallel."""
    with _TABLE_LOCKS_GUARD:
        return _TABLE_LOCKS.setdefault(table, threading.Lock())

"""One Kafka topic-partition applied to the lake exactly once, without trusting Kafka commits.

A *lane* is one partition of one table's topic. It owns its own Delta transaction app ids
(`<pipeline app id>:<topic>:<partition>:<table>:<layer>`, in its own `Lake` or in one shared
by the topic's lanes, whose batches then commit together: `group.py`), and a batch's
id encodes the Kafka offset after its last record (`next_offset << 12 | partition`). So every
Delta commit records the offsets it contains, and `transaction_version(app id)` of a layer
gives the next offset to read:

- on assignment the lane reads that version back and the consumer seeks there;
- records below it are replays (a rebalance, a commit the consumer lost) and are dropped;
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
from dataclasses import dataclass, field
from typing import Any, Protocol

from tidemark.connectors.decode.decoder import Decoder
from tidemark.kernel.columns import Layer
from tidemark.kernel.model import MilestonedTable
from tidemark.kernel.records import RawRecord
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
from tidemark.stream_processors.distributed.topics import SourceTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One consumed record of the lane's partition."""

    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class LaneOutcome:
    """What one `LaneWork.apply` call did.

    Attributes:
        seek_to: the consumer must re-read the partition from this offset (gap, zombie).
        events: change events committed.
        batches: Delta batches committed (0, 1 or 2: a crash-boundary batch splits).
        commit_seconds: wall time of each committed batch (decode to durable commit).
        dead_letters: records sent to the dead letters.
    """

    seek_to: int | None = None
    events: int = 0
    batches: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    dead_letters: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str, seconds: float) -> None:
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds


class Outputs(Protocol):
    """Where a lane publishes besides the lake (Kafka topics); see `outputs.py`."""

    def dead_letters(self, letters: Sequence[Any]) -> None: ...
    def live(self, table: MilestonedTable) -> None: ...


class TxGate(Protocol):
    """Decides how much of a lane's pending records may commit (see `txgate.py`)."""

    def committable(self, lane: str, table: str, records: Sequence[KafkaRecord]) -> int: ...


class PartitionLane:
    """Applies one topic-partition's records to the lake, exactly once.

    Args:
        spec: the table's topic, lake name, source kind and key override.
        partition: the Kafka partition.
        lake: a `sinks.lake.Lake` whose app id is unique to this lane.
        layers: the layers this table is written to.
        outputs: optional Kafka outputs (dead-letter topic, live topics).
        gate: optional transaction gate (holds back records of unfinished transactions).
        partition_buckets: new live/forensic tables get buckets that follow the partition.
        verify_gap: `(topic, partition, offset) -> first existing offset` (`gaps.py`);
            without it a gap is never accepted (the lane keeps asking to seek back).
        decode: the decoder (`connectors.decode.decode_records`), injectable for tests.
        lane_app: this lane's app id prefix in a lake shared by the topic's lanes
            (`group.py`); None when `lake` is the lane's own (its app id is the prefix).
    """

    def __init__(
        self,
        spec: SourceTopic,
        partition: int,
        *,
        lake: Any,
        layers: frozenset[Layer],
        outputs: Outputs | None = None,
        gate: TxGate | None = None,
        partition_buckets: bool = True,
        verify_gap: Callable[[str, int, int], int | None] | None = None,
        decode: Callable[..., Any] | None = None,
        lane_app: str | None = None,
    ) -> None:
        if decode is None:
            decode = lane_decoder(spec)
        # `lane_app`: the lane's txn app id prefix when `lake` is shared by the lanes of a
        # topic (the worker's group commits); None: the lake is the lane's own.
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
        self._awaiting: int | None = None
        self._awaiting_since = 0.0
        self._decode = decode
        self._pending: list[KafkaRecord] = []
        self._lock = threading.Lock()
        self._seen: dict[Layer, int | None] = {}
        self.committed = 0
        self.next_offset = 0
        self.boundary: int | None = None
        self.sync()

    # -- lake state ------------------------------------------------------------------------

    def app_for(self, layer: Layer) -> str:
        """The Delta txn app id that records this lane's offset in one layer."""
        return f"{self.lane_app}:{self.spec.table}:{layer.value}"

    def applied(self, layer: Layer) -> int:
        """The batch id (txn version) this lane last committed to `layer` (0: none)."""
        dt = self._sink(layer).handle.dt
        return 0 if dt is None else int(dt.transaction_version(self.app_for(layer)) or 0)

    def _sink(self, layer: Layer) -> Any:
        sink = self.lake.sink(self.spec.table, layer)
        handle = sink.handle
        if not getattr(handle, "_tidemark_lane", False):
            # The sinks assume one writer per table; lanes are several. Two adjustments
            # (to move into sinks/ as a multi-writer mode):
            # - the changelog drops events at or below a *table-wide* position read from the
            #   last commit of any writer; lanes interleave positions, so a lane must not
            #   inherit another's. Replays are handled by the lane's offsets (txn versions)
            #   and the core's per-key replay filter instead.
            handle._read_position = lambda: None
            handle._position = None
            handle._tidemark_lane = True
        return sink

    def lake_offsets(self) -> tuple[int, int]:
        """(lowest, highest) next offset recorded by this lane's layers, refreshed.

        Also drops the sinks' cached bucket rows of a layer when another writer (another
        lane of the table) committed since this lane last looked: the cache holds only what
        this lane wrote, and a bucket rewritten from a stale cache would lose their rows.
        """
        versions = []
        for layer in sorted(self.layers):
            sink = self._sink(layer)
            handle = sink.handle
            handle.refresh()
            version = None if handle.dt is None else handle.dt.version()
            if (
                version != self._seen.get(layer)
                and hasattr(sink, "rows")
                and not _own_buckets(sink)
            ):
                sink.rows.clear()
            self._seen[layer] = version
            versions.append(offset_of(self.applied(layer)))
        return min(versions), max(versions)

    def _remember_versions(self) -> None:
        for layer in self.layers:
            dt = self._sink(layer).handle.dt
            self._seen[layer] = None if dt is None else dt.version()

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
                continue  # a replay: already applied or already pending
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

    def apply(self, records: Sequence[KafkaRecord]) -> LaneOutcome:
        """Admit `records` and commit what may be committed (blocking: run in a thread)."""
        with self._lock:
            return self._apply(records)

    def _apply(self, records: Sequence[KafkaRecord]) -> LaneOutcome:
        outcome = LaneOutcome()
        seek = self.admit(records)
        while self._pending:
            count = self._cut()
            if count == 0:
                break
            chunk, self._pending = self._pending[:count], self._pending[count:]
            if not self._commit(chunk, outcome):
                outcome.seek_to = self.sync()
                return outcome
        if seek is not None:
            outcome.seek_to = seek
        return outcome

    def _cut(self) -> int:
        """How many pending records form the next batch (0: wait for more)."""
        pending = self._pending
        if self.boundary is not None:
            if pending[-1].offset + 1 < self.boundary:
                return 0  # the crash-boundary batch must be replayed whole
            count = sum(1 for r in pending if r.offset < self.boundary)
            return count
        if self.gate is not None:
            return self.gate.committable(self.name, self.spec.table, pending)
        return len(pending)

    def _commit(self, chunk: list[KafkaRecord], outcome: LaneOutcome) -> bool:
        """Commit one batch; False when another worker moved the lane (caller re-syncs)."""
        started = time.perf_counter()
        end = chunk[-1].offset + 1  # the next offset after this batch
        decoded = self._decode(raw_records(self.spec.topic, self.partition, chunk))
        outcome.timed("decode", time.perf_counter() - started)
        # Buckets that follow the partition are this lane's alone: no lock, no conflict.
        if all(_own_buckets(self._sink(layer)) for layer in self.layers):
            return self._commit_locked(chunk, end, decoded, outcome, started)
        with _table_lock(self.spec.table):
            return self._commit_locked(chunk, end, decoded, outcome, started)

    def _commit_locked(
        self, chunk: list[KafkaRecord], end: int, decoded: Any, outcome: LaneOutcome, started: float
    ) -> bool:
        batch_id = batch_id_of(end, self.partition)
        letters = list(decoded.dead_letters)
        tables: list[MilestonedTable] = []
        milestoned: list[MilestonedTable] | None = None
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            mark = time.perf_counter()
            low, high = self.lake_offsets()
            outcome.timed("refresh", time.perf_counter() - mark)
            if low != self.committed or high not in (self.committed, end):
                log.warning(
                    "lane %s: the lake moved to offsets %s..%s under us (expected %s);"
                    " dropping batch %s",
                    self.name,
                    low,
                    high,
                    self.committed,
                    end,
                )
                return False
            if milestoned is None:  # once: on a retry, layers that did commit would make
                # the batch's own events look like replays
                mark = time.perf_counter()
                self._pin_buckets(())  # existing tables: current_versions needs the partition
                milestoned = milestone_tables(self.lake, decoded.changes, batch_id, self.layers)
                outcome.timed("milestone", time.perf_counter() - mark)
                self._pin_buckets(milestoned)  # a new table: its layout is chosen here
            tables = milestoned
            mark = time.perf_counter()
            try:
                write_batch(
                    self.lake,
                    self.spec.table,
                    self.layers,
                    [(self, end)],
                    batch_id,
                    tables,
                    letters,
                )
            except Exception as exc:
                if not is_conflict(exc) or attempt == MAX_CONFLICT_RETRIES:
                    raise
                log.warning(
                    "lane %s: batch %s conflicted (attempt %s); retrying",
                    self.name,
                    batch_id,
                    attempt,
                )
                time.sleep(0.05 * attempt)
                refresh_logs(self.lake)
                continue
            outcome.timed("commit", time.perf_counter() - mark)
            break
        if tables:
            self.committed = end
            self._remember_versions()
        if self.boundary is not None and end >= self.boundary:
            self.boundary = None
        if self.outputs is not None:
            if letters:
                self.outputs.dead_letters(letters)
            for table in tables:
                self.outputs.live(table)
        outcome.events += sum(t.changelog.num_rows for t in tables)
        outcome.batches += 1 if tables else 0
        outcome.dead_letters += len(letters)
        outcome.commit_seconds.append(time.perf_counter() - started)
        log.info("lane %s: batch %s committed (%s records)", self.name, batch_id, len(chunk))
        return True

    def _pin_buckets(self, tables: Sequence[MilestonedTable]) -> None:
        """This partition pinned in the table's bucketing (a new table's buckets follow it)."""
        pin_bucketing(
            self.lake,
            self._sink,
            self.layers,
            tables,
            partition_buckets=self.partition_buckets,
            pin=lambda b: b.by_partition(self.partition),
        )

    def close(self) -> None:
        if self._owns_lake:
            self.lake.close()


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


def lane_decoder(spec: SourceTopic) -> Callable[[Sequence[RawRecord]], Any]:
    """A decoder of the lane's own: decoders keep per-source position state (snapshot
    counters), which must not be shared across lanes that run in parallel threads."""
    keys = {spec.table: spec.key_columns} if spec.key_columns else {}
    return Decoder(spec.kind, keys).decode


_TABLE_LOCKS: dict[str, threading.Lock] = {}
_TABLE_LOCKS_GUARD = threading.Lock()


def _own_buckets(sink: Any) -> bool:
    """True for a layer whose buckets follow the Kafka partition (or that has none)."""
    if not hasattr(sink, "rows"):
        return True  # the changelog: append only
    bucketing = getattr(sink, "bucketing", None)
    return bucketing is not None and bucketing.kind == "partition"


def _table_lock(table: str) -> threading.Lock:
    """Lanes of one table in one process commit one at a time: they would only conflict
    on the table's shared files (and retry); decoding still runs in parallel."""
    with _TABLE_LOCKS_GUARD:
        return _TABLE_LOCKS.setdefault(table, threading.Lock())

"""The embedded runtime's loop: engine -> decode -> batch -> milestone -> lake -> acknowledge.

One thread polls every source's engine, decodes what it got, feeds the batcher, and whenever
a batch is due hands it to a commit thread (`inflight.py`), which looks up the open versions
of the batch's keys, runs the core per table and commits the batch to the lake
(`applier.py`), while the loop polls and decodes the next one (`reports.py`: what it
tells). Only once the commit is done does the loop acknowledge the source offsets the batch
covered (DESIGN §3.3); the next batch is cut only after that, so one batch is in flight at
a time and batches commit in order. Failures are sorted by the
error tree: a `TransientError` (source down, commit conflict) is retried with exponential
backoff, a source that failed is reopened and replays from its last acknowledged offset (the
core and the lake drop what was already applied), anything terminal stops the run.
Backpressure: while more than `max_pending_events` are held (the batch in flight included),
the loop stops polling and commits instead, so the engines' bounded queues make Debezium
wait rather than memory grow. A transaction bigger than that cannot wait for its END in
memory (nor could it ever complete while polling stops): it is committed in parts
(`Batcher(part_events=...)`), acknowledged only once whole, and the batch log keeps the lake's
watermark behind it until its last part is in (docs/pipeline.md, "Transactions of any size").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tidemark.connectors.debezium.offsets import offsets_lsn
from tidemark.connectors.decode.position import lsn_position
from tidemark.kernel.columns import Layer
from tidemark.kernel.errors import TransientError
from tidemark.kernel.records import RawRecord
from tidemark.sinks.writer import BatchResult, LakeWriter
from tidemark.stream_processors.batching import Batcher, PipelineBatch
from tidemark.stream_processors.embedded.applier import BatchApplier
from tidemark.stream_processors.embedded.arming import Notification, SourceTracker
from tidemark.stream_processors.embedded.inflight import InFlight
from tidemark.stream_processors.embedded.reports import BatchReport, RunStats, report_of
from tidemark.stream_processors.embedded.sources import (
    Chunk,
    OpenSource,
    Target,
    plan_targets,
)
from tidemark.stream_processors.loading.gate import LoadGate, TableLoading

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """What the runner needs from a capture engine (connectors/debezium/engine.py)."""

    def poll(self, timeout: float = 1.0) -> list[RawRecord]: ...
    def acknowledge(self, upto: RawRecord) -> int: ...
    def offset_for(self, upto: RawRecord) -> dict[str, str]: ...
    @property
    def backlogged(self) -> bool: ...
    def close(self) -> None: ...


class Decoder(Protocol):
    """What the runner needs from the decoder (connectors/decode)."""

    def decode(self, records: Sequence[RawRecord]) -> Any: ...
    def resume_from(self, source: str, position: str | None, *, epoch: int = 0) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    """One source as the runner sees it.

    Attributes:
        name: the source name (Debezium topic prefix; key of batch positions).
        open_engine: starts its engine (called again after a failure).
        decoder: decodes its records (stateful: snapshot position counters).
        resume_position: the highest position of this source the lake holds.
        request_snapshot: asks the source for an incremental snapshot of one table
            (`schema.table`, optional SQL filter): how an attached partition's rows arrive.
        tracker: keeps what the lake holds of this source up to date (offsets, snapshots;
            `arming.py`); with one, offsets are acknowledged only once the lake holds them
            and snapshots reconcile with the lake. None: acknowledge after each commit.
        notifications: the destination of the engine's Debezium notifications.
        epoch: the source's position epoch (`connectors/decode/position.py`).
    """

    name: str
    open_engine: Callable[[], Engine]
    decoder: Decoder
    resume_position: Callable[[], str | None] = lambda: None
    request_snapshot: Callable[[str, str | None], None] | None = None
    tracker: SourceTracker | None = None
    notifications: str | None = None
    epoch: int = 0


@dataclass(frozen=True)
class RunnerSettings:
    """Batching, backpressure and retry knobs (from `PipelineConfig`)."""

    max_events: int = 50_000
    max_latency_ms: int = 500
    max_pending_events: int | None = None  # default 4 x max_events
    poll_timeout_s: float = 0.2
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    layers: Mapping[str, frozenset[Layer]] | None = None
    checkpoint_s: float = 2.0  # idle: record the stream's progress in the lake this often
    keys: Mapping[str, tuple[str, ...]] | None = None  # table -> key columns (reconciling)


class EmbeddedRunner:
    """Runs the pipeline loop until a stop event is set.

    Args:
        sources: the sources to capture.
        lake: the lake (`sinks.lake.Lake`, or a test double with the same typed API).
        settings: batching, backpressure, retries.
        on_batch: called after each committed and acknowledged batch.
        keep_source_ts: put every event's commit time in the reports (benchmarks).
        on_idle: called with a source's name when a poll of it brought nothing to commit
            while nothing was held or being committed: the lake then holds every change the
            source had sent (caught-up marks, `sinks/progress.py`).
        on_health: told `("retrying", error)` for each retry of a transient failure (a
            source down, a commit conflict) and `("running", None)` once it works again.
        gate: the hand-over of tables armed by the parallel loader: their streamed changes
            wait while they load, and those their snapshot holds are dropped
            (`stream_processors/loading/gate.py`).
    """

    def __init__(
        self,
        sources: Sequence[SourceSpec],
        lake: LakeWriter,
        *,
        settings: RunnerSettings | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        keep_source_ts: bool = False,
        on_idle: Callable[[str], object] | None = None,
        on_health: Callable[[str, str | None], None] | None = None,
        gate: LoadGate | None = None,
    ) -> None:
        self.settings = settings or RunnerSettings()
        self.on_health = on_health
        self._retrying = False
        self.gate = gate
        self.lake = lake
        self.on_batch = on_batch
        self.on_idle = on_idle
        self.keep_source_ts = keep_source_ts
        self.stats = RunStats()
        self._sources = [OpenSource(spec) for spec in sources]
        self._batcher = self._new_batcher()
        self.idle_since: float | None = None  # since when polls bring no change events
        self._inflight: InFlight[PipelineBatch, tuple[BatchResult, datetime, int]] = InFlight()
        self.heartbeats = 0  # heartbeats seen: Debezium sends them once it streams
        self._targets: dict[str, Target] = {}  # source -> what the batch in flight acks
        self._last_record = time.monotonic()  # when the lake last got the stream's progress
        self._record_id: int | None = None  # a reserved id to record sources after DDL steps
        self._applier = BatchApplier(  # the commit thread's work
            lake, self._sources, layers=self.settings.layers, keys=self.settings.keys, gate=gate
        )

    def _new_batcher(self) -> Batcher:
        # Under backlog a batch grows to half the events that may be held, so one batch can
        # commit while the next one fills, and together they stay within `max_pending`. An
        # open transaction goes out in parts of at most a batch only once it fills all that
        # may be held (or, with a batch in flight, nothing more may be held: `poll(full=)`):
        # one that fits goes whole, however the engine's chunks happened to cut it.
        half = max(1, self.max_pending // 2)
        return Batcher(
            max_events=self.settings.max_events,
            max_latency_ms=self.settings.max_latency_ms,
            max_events_cap=half,
            # Never reuse a batch id a killed process left in some layers: the replayed
            # batch may hold other events, and those layers would skip all of it.
            first_batch_id=self.lake.highest_batch_id() + 1,
            part_events=self.max_pending,
        )

    @property
    def pending_events(self) -> int:
        """Events received but not committed yet (held, or in the batch being committed)."""
        batch = self._inflight.batch
        return self._batcher.pending_events + (batch.event_count if batch is not None else 0)

    @property
    def max_pending(self) -> int:
        return self.settings.max_pending_events or 4 * self.settings.max_events

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> RunStats:
        """Capture until `stop` is set; then commit the complete transactions held and return.

        Raises:
            TidemarkError: a terminal failure (bad config, schema the lake cannot take).
        """
        try:
            while not stop.is_set():
                self._step(stop)
            self._drain(stop)
        finally:
            self._inflight.close()
            for source in self._sources:
                self._close(source)
        return self.stats

    def _step(self, stop: threading.Event) -> None:
        for source in self._sources:
            if stop.is_set():
                return
            if self.pending_events >= self.max_pending:
                break  # backpressure: commit before taking more
            records = self._poll(source, stop)
            if records:
                self._feed(source, records)
            elif self.idle_since is None:
                self.idle_since = time.monotonic()
            # In a backlog (the engine holds more already) batches close on size only:
            # each commit has a fixed cost, and the events are late anyway.
            backlog = source.engine is not None and source.engine.backlogged
            self._commit_due(stop, latency=not backlog)
        self._commit_due(
            stop,
            force=self.pending_events >= self.max_pending,
            latency=not any(s.engine and s.engine.backlogged for s in self._sources),
        )

    def _poll(self, source: OpenSource, stop: threading.Event) -> list[RawRecord]:
        backoff = self.settings.backoff_initial_s
        while not stop.is_set():
            try:
                if source.engine is None:
                    self._reopen(source)
                assert source.engine is not None
                return source.engine.poll(self.settings.poll_timeout_s)
            except (TransientError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and "InterruptedException" not in str(exc):
                    raise
                # An interrupted poll (the JVM interrupted the calling thread) is retried
                # like a lost connection: reopen and replay from the acknowledged offset.
                self.stats.retries += 1
                self._health("retrying", f"source {source.spec.name}: {exc}")
                logger.warning("source %s: %s; retrying in %.1f s", source.spec.name, exc, backoff)
                self._settle(acknowledge=False)  # the engine is gone: the replay covers it
                self._close(source)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_s)
        return []

    def _reopen(self, source: OpenSource) -> None:
        """(Re)open an engine. After a failure everything not yet committed is replayed by
        the engine from its acknowledged offset, so what the batcher holds is dropped."""
        self._settle(acknowledge=False)
        if self.stats.batches or self._batcher.pending_events or source.chunks:
            self.stats.reopened += 1
            self._batcher = self._new_batcher()
            for other in self._sources:
                other.chunks.clear()
                if other is not source and other.engine is not None:
                    self._close(other)  # its held events were dropped too: replay them
        position = source.spec.resume_position()
        source.spec.decoder.resume_from(source.spec.name, position, epoch=source.spec.epoch)
        source.engine = source.spec.open_engine()
        logger.info("source %s: engine open (lake at %s)", source.spec.name, position)

    def _close(self, source: OpenSource) -> None:
        if source.engine is not None:
            try:
                source.engine.close()
            except Exception:  # closing a failed engine must not hide the failure
                logger.exception("source %s: closing the engine failed", source.spec.name)
            source.engine = None

    def _feed(self, source: OpenSource, records: list[RawRecord]) -> None:
        notes = [
            Notification.parse(r.value)
            for r in records
            if r.destination == source.spec.notifications and r.value
        ]
        decoded = source.spec.decoder.decode(records)
        self.heartbeats += int(getattr(decoded, "heartbeats", 0) or 0)
        if decoded.last_position is not None:
            source.last_position = decoded.last_position
        source.chunks.append(Chunk(records[-1], source.last_position, notes))
        for note in notes:
            logger.debug(
                "source %s: %s %s %s", source.spec.name, note.aggregate, note.type, note.id
            )
        if notes and source.spec.tracker is not None:
            source.spec.tracker.polled(notes)
        if decoded.changes:
            self.idle_since = None
        self._batcher.add(decoded, source=source.spec.name)
        if (
            self._batcher.pending_events == 0
            and not self._batcher.splitting
            and not decoded.dead_letters
            and not self._inflight.busy
        ):
            self._acknowledge_idle(source)

    def _commit_due(
        self, stop: threading.Event, *, force: bool = False, latency: bool = True
    ) -> None:
        if self._inflight.finished:
            self._settle()
        while self._batcher.due(force=force, latency=latency):
            # Cut the next batch only once the last one is acknowledged: acknowledging
            # reads what the batcher still holds, and that must not include a cut batch.
            self._settle()
            # `force` comes from backpressure: nothing more may be held (`full`)
            batch = self._batcher.poll(force=force, latency=latency, full=force)
            if batch is None:
                return
            self._start(batch, stop)
            force = force and self.pending_events >= self.max_pending

    def _drain(self, stop: threading.Event) -> None:
        """On stop: commit every complete transaction held (incomplete ones are replayed)."""
        self._settle()
        while (batch := self._batcher.poll(force=True)) is not None:
            self._start(batch, stop, stopping=True)
            self._settle()

    # -- one batch -----------------------------------------------------------------------
    def _start(
        self,
        batch: PipelineBatch,
        stop: threading.Event,
        *,
        stopping: bool = False,
        idle: bool = False,
    ) -> None:
        self._targets = plan_targets(self._sources, batch, idle=idle)
        # A batch applied in steps (DDL) records the sources after its last one, under an id
        # of its own: a step may be an op, committed without them.
        plans = any(t.plan is not None for t in self._targets.values())
        self._record_id = self._batcher.reserve_id() if batch.ops and plans else None
        if idle:  # a checkpoint: the lake has everything that committed before its offsets
            for source in self._sources:
                target = self._targets.get(source.spec.name)
                lsn = offsets_lsn(target.plan.record.offsets) if target and target.plan else None
                if lsn is not None:
                    at = lsn_position(lsn, source.spec.epoch)
                    batch.positions[source.spec.name] = max(
                        batch.positions.get(source.spec.name) or at, at
                    )
        targets, record_id = self._targets, self._record_id
        self._inflight.start(
            batch, lambda: self._apply_retrying(batch, targets, record_id, stop, stopping)
        )

    def _apply_retrying(
        self,
        batch: PipelineBatch,
        targets: Mapping[str, Target],
        record_id: int | None,
        stop: threading.Event,
        stopping: bool,
    ) -> tuple[BatchResult, datetime, int]:
        """On the commit thread: (the lake's result, when the batch started, retries)."""
        started = datetime.now(UTC)
        backoff = self.settings.backoff_initial_s
        retries = 0
        while True:
            try:
                result = self._applier.apply(batch, started, targets, record_id)
                return result, started, retries
            except TableLoading as exc:
                if stop.is_set() and not stopping:
                    raise
                if not retries:
                    logger.info("batch %d: %s", batch.batch_id, exc.message)
                retries += 1
                time.sleep(self.settings.backoff_initial_s)  # not a failure: no backoff
            except TransientError as exc:
                if stop.is_set() and not stopping:
                    raise
                retries += 1
                self._health("retrying", f"batch {batch.batch_id}: {exc}")
                logger.warning("batch %d: %s; retrying in %.1f s", batch.batch_id, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_s)

    def _settle(self, *, acknowledge: bool = True) -> None:
        """Wait for the batch in flight (raising its error), acknowledge and report it."""
        if not self._inflight.busy:
            return
        batch, (result, started, retries) = self._inflight.take()
        targets, self._targets = self._targets, {}
        self.stats.retries += retries
        self._last_record = time.monotonic()
        for source in self._sources:
            target = targets.get(source.spec.name)
            if target is not None and target.plan is not None and source.spec.tracker:
                source.spec.tracker.adopt(target.plan)  # the lake holds it now
        if acknowledge:
            self._acknowledge(batch, targets)
        if not batch.event_count and not batch.dead_letters:
            return  # a checkpoint: the stream's progress recorded, nothing to report
        report = report_of(batch, started, result, keep_source_ts=self.keep_source_ts)
        self.stats.batches += 1
        if self._retrying:
            self._health("running", None)
        self.stats.events += batch.event_count
        self.stats.dead_letters += len(batch.dead_letters) + result.dead_letters
        self.stats.last = report
        logger.info(
            "batch %d committed: %d events, %d tx (%s)%s",
            batch.batch_id,
            batch.event_count,
            batch.tx_count,
            batch.closed_by,
            ""
            if not batch.split
            else f", part of transaction {batch.split}"
            + ("" if batch.consistent else " (watermark held back)"),
        )
        if self.on_batch is not None:
            self.on_batch(report)

    def _health(self, state: str, error: str | None) -> None:
        self._retrying = state == "retrying"
        if self.on_health is not None:
            self.on_health(state, error)

    def _acknowledge(self, batch: PipelineBatch, targets: Mapping[str, Target]) -> None:
        """Acknowledge, per source, the newest polled chunk the batch fully covers.

        A tracked source acknowledges exactly the chunk whose offsets the lake just got;
        an untracked one everything polled when nothing else is held.
        """
        for source in self._sources:
            if source.spec.tracker is not None:
                target = targets.get(source.spec.name)
                if target is not None and target.chunk and source.engine is not None:
                    source.engine.acknowledge(target.chunk.last)
                    if target.chunk in source.chunks:
                        index = source.chunks.index(target.chunk)
                        source.chunks = source.chunks[index + 1 :]
                continue
            position = batch.positions.get(source.spec.name)
            # Nothing held and no transaction half-committed: everything polled is covered.
            idle = self._batcher.pending_events == 0 and not self._batcher.splitting
            covered = [
                c
                for c in source.chunks
                if idle
                or (position is not None and c.position is not None and c.position <= position)
            ]
            if not covered or source.engine is None:
                continue
            upto = covered[-1]
            source.engine.acknowledge(upto.last)
            source.chunks = source.chunks[source.chunks.index(upto) + 1 :]

    def _acknowledge_idle(self, source: OpenSource) -> None:
        """Nothing held (heartbeats, markers only): acknowledge so the slot can advance.

        A tracked source first records the stream's progress in the lake (a checkpoint:
        a batch without events), at most every `checkpoint_s`, or at once when a snapshot
        notice is waiting; its offsets never run ahead of the lake. Never while a
        transaction is half-committed: its records wait for its last part.
        """
        if self._batcher.splitting:
            return
        if source.engine is None or not source.chunks or self._batcher.pending_events:
            return
        if source.spec.tracker is None:
            source.engine.acknowledge(source.chunks[-1].last)
            source.chunks.clear()
        if self.on_idle is not None:  # the lake holds every change the source sent
            self.on_idle(source.spec.name)
        if source.spec.tracker is None:
            return
        waiting = any(c.notes for s in self._sources for c in s.chunks)
        if not waiting and time.monotonic() - self._last_record < self.settings.checkpoint_s:
            return
        positions = {
            s.spec.name: s.last_position
            for s in self._sources
            if s.chunks and s.last_position is not None
        }
        checkpoint = PipelineBatch(
            batch_id=self._batcher.reserve_id(),
            changes={},
            positions=positions,
            event_count=0,
            tx_count=0,
            closed_by="force",
        )
        self._start(checkpoint, threading.Event(), stopping=True, idle=True)

"""The embedded runtime's loop: engine -> decode -> batch -> milestone -> lake -> acknowledge.

One thread polls every source's engine, decodes what it got, feeds the batcher, and whenever
a batch is due hands it to a commit thread (`inflight.py`), which looks up the open versions
of the batch's keys, runs the core per table and commits the batch to the lake, while the
loop polls and decodes the next one. Only once the commit is done does the loop acknowledge
the source offsets the batch covered (DESIGN §3.3); the next batch is cut only after that,
so one batch is in flight at a time and batches commit in order. Failures are sorted by the
error tree: a `TransientError` (source down, commit conflict) is retried with exponential
backoff, a source that failed is reopened and replays from its last acknowledged offset (the
core and the lake drop what was already applied), anything terminal stops the run.
Backpressure: while more than `max_pending_events` are held (the batch in flight included),
the loop stops polling and commits instead, so the engines' bounded queues make Debezium
wait rather than memory grow. A transaction bigger than half of that cannot wait for its END
in memory (nor could it ever complete while polling stops): it is committed in parts
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
from typing import Any, Protocol, cast

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.debezium.offsets import offsets_lsn
from tidemark.connectors.decode.position import lsn_position
from tidemark.kernel.columns import SOURCE_TS, Layer
from tidemark.kernel.errors import TerminalError, TransientError
from tidemark.kernel.model import TableChanges
from tidemark.kernel.records import RawRecord
from tidemark.sinks.writer import BatchResult, LakeWriter, Refused
from tidemark.stream_processors import steps
from tidemark.stream_processors.batching import Batcher, ClosedBy, PipelineBatch
from tidemark.stream_processors.embedded.arming import Notification, SourceTracker
from tidemark.stream_processors.embedded.inflight import InFlight
from tidemark.stream_processors.embedded.reconcile import KeptKeysLake, Reconciler
from tidemark.stream_processors.embedded.sources import (
    Chunk,
    OpenSource,
    Target,
    plan_targets,
    records_of,
)
from tidemark.stream_processors.embedded.table_steps import TableSteps
from tidemark.stream_processors.milestoning.core import milestone

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
    max_latency_ms: int = 1_000
    max_pending_events: int | None = None  # default 4 x max_events
    poll_timeout_s: float = 0.2
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    layers: Mapping[str, frozenset[Layer]] | None = None
    checkpoint_s: float = 2.0  # idle: record the stream's progress in the lake this often
    keys: Mapping[str, tuple[str, ...]] | None = None  # table -> key columns (reconciling)


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did, for progress displays, status and benchmarks."""

    batch_id: int
    events: int
    transactions: int
    tables: dict[str, int]
    dead_letters: int
    closed_by: str
    started_at: datetime
    committed_at: datetime
    max_source_ts: datetime | None
    source_ts: pa.Array | None = None  # every event's commit time (for latency percentiles)
    lake_result: BatchResult | None = None  # what the lake returned (commit times, counts)
    consistent: bool = True  # the lake holds whole source transactions after it (no open part)


@dataclass
class RunStats:
    """Totals over one `run`."""

    batches: int = 0
    events: int = 0
    dead_letters: int = 0
    retries: int = 0
    reopened: int = 0
    last: BatchReport | None = None


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
    ) -> None:
        self.settings = settings or RunnerSettings()
        self.on_health = on_health
        self._retrying = False
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
        self._reconciler = Reconciler(
            cast(KeptKeysLake, lake),
            layers=self.settings.layers or {},
            keys=self.settings.keys or {},
        )
        self._tables = TableSteps(  # DDL and TRUNCATE (docs/schema-changes.md)
            lake,
            self.settings.layers,
            {
                spec.name: (getattr(spec.decoder, "key_columns", {}), spec.request_snapshot)
                for spec in sources
            },
        )

    def _new_batcher(self) -> Batcher:
        # Under backlog a batch grows to half the events that may be held, so one batch can
        # commit while the next one fills, and together they stay within `max_pending`. An
        # open transaction that reaches that half goes out in parts of at most a batch.
        half = max(1, self.max_pending // 2)
        return Batcher(
            max_events=self.settings.max_events,
            max_latency_ms=self.settings.max_latency_ms,
            max_events_cap=half,
            # Never reuse a batch id a killed process left in some layers: the replayed
            # batch may hold other events, and those layers would skip all of it.
            first_batch_id=self.lake.highest_batch_id() + 1,
            part_events=half,
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
        self._inflight.start(batch, lambda: self._apply_retrying(batch, stop, stopping))

    def _apply_retrying(
        self, batch: PipelineBatch, stop: threading.Event, stopping: bool
    ) -> tuple[BatchResult, datetime, int]:
        """On the commit thread: (the lake's result, when the batch started, retries)."""
        started = datetime.now(UTC)
        backoff = self.settings.backoff_initial_s
        retries = 0
        while True:
            try:
                return self._apply(batch, started), started, retries
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
        report = self._report(batch, started, result)
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

    def _apply(self, batch: PipelineBatch, started: datetime) -> BatchResult:
        """Milestone each table against the lake and commit the batch with its dead letters.

        The replay guard runs inside `milestone` at the table's watermark (events Debezium
        delivers again, copies of one position, snapshot rows the lake already holds); a
        table that cannot be milestoned (a column type the lake's cannot take, a value Arrow
        cannot handle) goes to the dead letters with the batch and the rest is committed
        (DESIGN §3.3, guarantee 7). A batch holding DDL or TRUNCATE is applied as steps: the
        events before each change, the change, the events after it (docs/schema-changes.md),
        each under its own reserved batch id; the batch's dead letters go with the first.
        """
        plans = [t.plan for t in self._targets.values() if t.plan is not None]
        # The keys of tables being snapshotted kept, and the rows a snapshot this batch
        # completes shows gone deleted (`reconcile.py`).
        changes = self._reconciler.changes(batch.batch_id, batch.changes, plans)
        ops = self._tables.captured(batch.ops)
        if not ops:
            result = self._apply_changes(
                batch.batch_id,
                changes,
                batch.positions,
                started,
                batch.closed_by,
                batch.dead_letters,
                record=True,
                split=batch.split,
                consistent=batch.consistent,
            )
            self._reconciler.forget(plans)
            return result
        step_result: BatchResult | None = None
        letters = batch.dead_letters
        plan = list(steps.plan(batch.batch_id, changes, ops, positions=batch.positions))
        for index, step in enumerate(plan):
            # A step ends inside the batch, perhaps inside a transaction: only the last one
            # can leave the lake transaction-consistent (docs/pipeline.md, the consistent cut).
            consistent = batch.consistent and index == len(plan) - 1
            if step.ops:
                step_result = self._tables.apply(
                    step,
                    started,
                    batch.closed_by,
                    dead_letters=letters,
                    split=batch.split,
                    consistent=consistent,
                )
            else:
                step_result = self._apply_changes(
                    step.batch_id,
                    step.changes,
                    step.positions,
                    started,
                    batch.closed_by,
                    letters,
                    split=batch.split,
                    consistent=consistent,
                )
            letters = ()
        assert step_result is not None  # a plan has at least one step
        if self._record_id is not None:  # what the lake holds of each source, after it all
            self._apply_changes(
                self._record_id,
                {},
                batch.positions,
                started,
                batch.closed_by,
                (),
                split=batch.split,
                consistent=batch.consistent,
                record=True,
            )
        self._reconciler.forget(plans)
        return step_result

    def _health(self, state: str, error: str | None) -> None:
        self._retrying = state == "retrying"
        if self.on_health is not None:
            self.on_health(state, error)

    def _apply_changes(
        self,
        batch_id: int,
        changes_by_table: Mapping[str, TableChanges],
        positions: Mapping[str, str],
        started: datetime,
        closed_by: ClosedBy,
        dead_letters: Sequence[Any],
        *,
        split: Mapping[str, str],
        consistent: bool,
        record: bool = False,
    ) -> BatchResult:
        """One stretch of events: milestoned per table and committed as one batch (`split`,
        `consistent`: the batch log's marks of a transaction in parts and of the cut); with
        `record`, the batch log gets what the lake holds of each source with it."""
        tables = []
        refused: list[Refused] = []
        for name, changes in changes_by_table.items():
            self._tables.keys[name] = changes.key_columns
            refusal = self._tables.refusal(name)
            if refusal:  # a DDL refused the table (docs/schema-changes.md)
                refused.append(Refused(changes, refusal))
                continue
            keys = changes.events.select(list(changes.key_columns))
            layers = (self.settings.layers or {}).get(name, frozenset(Layer))
            try:
                current = self.lake.current_versions(name, keys, layers)
                result = milestone(
                    changes,
                    current,
                    batch_id=batch_id,
                    ingested_at=started,
                    applied_position=self.lake.applied_position(name, layers),
                )
            except TransientError:
                raise
            except (TerminalError, pa.ArrowException, ArithmeticError, ValueError) as exc:
                # E.g. a column type the lake's cannot take, a value Arrow cannot handle: it
                # follows from this table's events, so they go to the dead letters and the
                # other tables go on; raising would fail the same way on every restart
                # (DESIGN §3.3, guarantee 7).
                reason = exc.message if isinstance(exc, TerminalError) else _reason(exc)
                logger.error(
                    "batch %d, table %s: %s; its %d events go to the dead letters",
                    batch_id,
                    name,
                    reason,
                    changes.events.num_rows,
                    exc_info=not isinstance(exc, TerminalError),
                )
                refused.append(Refused(changes, reason))
                continue
            tables.append(result)
        records = records_of(self._sources, self._targets, tables) if record else {}
        return self.lake.commit_batch(
            batch_id,
            tables,
            source_positions=positions,
            started_at=started,
            layers=self.settings.layers,
            closed_by=closed_by,
            dead_letters=dead_letters,
            split=split,
            consistent=consistent,
            refused=refused,
            sources=records or None,
        )

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

    def _report(self, batch: PipelineBatch, started: datetime, result: BatchResult) -> BatchReport:
        stamps = [
            t.events.column(SOURCE_TS)
            for t in batch.changes.values()
            if SOURCE_TS in t.events.column_names
        ]
        every = (
            pa.chunked_array([s for s in stamps for s in s.chunks], pa.timestamp("us", "UTC"))
            if stamps
            else None
        )
        highest = pc.max(every).as_py() if every is not None and len(every) else None
        committed = result.committed_at
        return BatchReport(
            batch_id=batch.batch_id,
            events=batch.event_count,
            transactions=batch.tx_count,
            tables={n: t.events.num_rows for n, t in batch.changes.items()},
            dead_letters=len(batch.dead_letters),
            closed_by=batch.closed_by,
            started_at=started,
            committed_at=committed,
            max_source_ts=highest,
            source_ts=every.combine_chunks() if self.keep_source_ts and every is not None else None,
            lake_result=result,
            consistent=batch.consistent,
        )


def _reason(exc: BaseException) -> str:
    """One line naming an unexpected failure (a dead letter's reason)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""Wiring: build the embedded pipeline's parts from a `PipelineConfig`.

The only place that reads the whole config: below it, the runner, the engines, the decoder
and the lake receive the few typed values they use (STYLE §3).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.decode import TYPE_SETTINGS, Decoder
from tidemark.kernel.errors import UsageError
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.embedded.arming import SourceTracker
from tidemark.stream_processors.embedded.reports import BatchReport, RunStats
from tidemark.stream_processors.embedded.runner import (
    EmbeddedRunner,
    Engine,
    RunnerSettings,
    SourceSpec,
)

if TYPE_CHECKING:
    from tidemark.connectors.debezium.engine import EmbeddedEngine
    from tidemark.kernel.positions import SourceRecord
    from tidemark.sinks.gold.scheduler import GoldScheduler
    from tidemark.startup import SourceStart
    from tidemark.stream_processors.loading.spec import LoadProgress, LoadResult

logger = logging.getLogger(__name__)


def start_jvm_for(config: PipelineConfig, state: Path) -> None:
    """Start the process's JVM as the engines will (so signal handlers can be set after it)."""
    from tidemark.connectors.debezium.jvm import start_jvm

    start_jvm(log_dir=state / "debezium", heap=config.debezium.jvm_heap)


def detach_from_jvm() -> None:
    """Detach the calling thread from the JVM, if it is attached.

    A Python thread that called into Java stays attached after it ends, and the JVM's
    shutdown at interpreter exit then waits for it forever. Call at the end of any thread
    that ran the runner.
    """
    try:
        import jpype
    except ImportError:
        return
    if jpype.isJVMStarted() and jpype.java.lang.Thread.isAttached():
        jpype.java.lang.Thread.detach()


def run_until(runner: EmbeddedRunner, stop: threading.Event) -> RunStats:
    """`runner.run(stop)` for a thread of its own: detaches from the JVM when it ends."""
    try:
        return runner.run(stop)
    finally:
        detach_from_jvm()


def open_lake(config: PipelineConfig) -> Lake:
    """The pipeline's lake facade.

    With a merge-on-read table the lake runs its maintenance thread: deleted rows and one
    small file per batch pile up until compaction folds them (docs/sinks.md).
    """
    modes = {
        table: config.write_mode_for(table)
        for source in config.sources
        for table in config.lake_tables_of(source)
    }
    return Lake(
        config.lake,
        app_id=config.app_id,
        storage_options=config.storage_options,
        cache_bytes=config.lake_cache_mb * 2**20,
        write_modes=modes,
        maintenance="merge_on_read" in modes.values(),
    )


def lake_source_position(lake: Lake, source: str) -> str | None:
    """The highest position of `source` in the lake's batch log (None before the first)."""
    log = lake.batch_log.read()
    if log.num_rows == 0:
        return None
    best: str | None = None
    for entries in log.column("source_positions").to_pylist():
        for name, position in entries or ():
            if name == source and position and (best is None or position > best):
                best = position
    return best


def open_source_engine(
    config: PipelineConfig,
    source: SourceConfig,
    *,
    state: Path,
    pipeline: str | None = None,
    extra: Mapping[str, str] | None = None,
    **options: Any,
) -> EmbeddedEngine:
    """Start the embedded engine of one Postgres source as every command does (run, up, tail).

    Args:
        pipeline: the name its slot and offsets derive from (default the config's).
        extra: Debezium properties on top of the type settings and the config's own.
        options: further `open_postgres_engine` arguments (slot, max_batch, ...).
    """
    from tidemark.connectors.postgres.capture import open_postgres_engine

    excluded = config.excluded_columns(source)
    dropped = {"column.exclude.list": excluded} if excluded else {}
    return open_postgres_engine(
        pipeline=pipeline or config.pipeline,
        source=source.name,
        dsn=source.dsn,
        tables=config.streamed_tables(source),
        state=state,
        heap=config.debezium.jvm_heap,
        heartbeat_ms=config.debezium.heartbeat_ms,
        extra={**TYPE_SETTINGS, **dropped, **config.debezium.properties, **(extra or {})},
        keys=source.keys,
        **options,
    )


def source_keys(source: SourceConfig) -> dict[str, tuple[str, ...]]:
    """Key columns per lake table: the config's `keys`, else the replica identity's.

    A table with `REPLICA IDENTITY USING INDEX` is keyed by that index's columns (Postgres
    logs those for updates and deletes; Debezium's message key would be the primary key or
    nothing). Other tables take their key from Debezium's message key (the primary key; none
    for `REPLICA IDENTITY FULL` without one: every row image is its identity).

    Raises:
        SourceUnavailable: the source cannot be reached (transient: the runner retries).
        SourceConfigError: a table cannot be captured exactly (connectors/postgres/tables.py).
    """
    from tidemark.connectors.postgres.setup import table_shapes

    keys = {
        source.lake_table(table): shape.identity_index
        for table, shape in table_shapes(source.dsn, source.tables).items()
        if shape.identity == "i"
    }
    keys.update({source.lake_table(t): tuple(k) for t, k in source.keys.items()})
    return keys


def _snapshot_requester(
    config: PipelineConfig, source: SourceConfig
) -> Callable[[str, str | None], None] | None:
    """How the runner asks a Postgres source for an incremental snapshot of one table."""
    if source.kind != "postgres":
        return None
    from tidemark.connectors.postgres.capture import request_snapshot, signal_table_name

    signal_table = signal_table_name(config.pipeline, source.name)

    def request(table: str, condition: str | None) -> None:
        request_snapshot(source.dsn, signal_table, [table], condition)

    return request


def _resume_position(tracker: SourceTracker) -> str | None:
    """The highest position the lake holds of a source (seeds the decoder's positions)."""
    return max(tracker.record.tables.values(), default=None)


def _open_engine(
    config: PipelineConfig,
    source: SourceConfig,
    state: Path,
    max_batch: int,
    decoder: Decoder,
    record: SourceRecord,
    *,
    from_loads: bool,
    require_ddl_capture: bool,
) -> Engine:
    """Open the source's engine from what the lake's `record` of it holds. With
    `from_loads` (a fresh source the loader armed) it streams from the loads' slot without
    a snapshot of its own (`tidemark/startload.py`)."""
    from tidemark.connectors.postgres.capture import engine_dir
    from tidemark.connectors.postgres.settings import replication_name
    from tidemark.startup import initial_snapshot_done, prepare_capture, streams_from_loads

    keys = source_keys(source)
    loads_slot = from_loads or streams_from_loads(record)
    if loads_slot:  # Debezium, started without a snapshot, may send a table's first
        # records without a key (seen after a TRUNCATE): the catalog's primary keys
        from tidemark.connectors.postgres.identity import primary_keys

        found = primary_keys(source.dsn, list(config.streamed_tables(source)))
        keys = {**{source.lake_table(t): tuple(k) for t, k in found.items()}, **keys}
    decoder.key_columns = keys  # before the first record is decoded
    if require_ddl_capture:  # after the tables' own checks: their reasons come first
        from tidemark.source_setup import check

        check(source)
    start_jvm_for(config, state)  # writing offsets needs it (an embedder may not have)
    slot = replication_name(config.pipeline, source.name)
    directory = engine_dir(state, config.pipeline, source.name)
    prepare_capture(source.dsn, slot, directory, record, keep_slot=loads_slot)
    resumes = bool(record.offsets) and initial_snapshot_done(record)
    no_data = {"snapshot.mode": "no_data"} if loads_slot and not resumes else {}
    return open_source_engine(
        config, source, state=state, max_batch=max_batch, notifications=True, extra=no_data
    )


def _engine_factory(
    config: PipelineConfig,
    source: SourceConfig,
    state: Path,
    max_batch: int,
    decoder: Decoder,
    tracker: SourceTracker,
    resnapshot: list[str],
    require_ddl_capture: bool = False,
    from_loads: bool = False,
    opened: Engine | None = None,
) -> Callable[[], Engine]:
    """Opens the source's engine from what the lake holds, every time (a reopen after a
    failure too), and asks once for the tables start-up found the lake to miss that the
    parallel loader left to Debezium. The first call takes `opened`, the engine opened while
    the loader ran, if any."""
    if source.kind != "postgres":
        raise UsageError(
            f"the embedded runtime captures Postgres sources; `{source.name}` is `{source.kind}`",
            hint="run SQL Server sources with the distributed runtime (`tidemark worker`)",
        )
    from tidemark.startup import arm_tables

    pending = list(resnapshot)
    early = [opened] if opened is not None else []
    surrogates = {t: k[0] for t, k in source.keys.items() if len(k) == 1}

    def open_engine() -> Engine:
        engine = early.pop() if early else None
        if engine is None:
            engine = _open_engine(
                config,
                source,
                state,
                max_batch,
                decoder,
                tracker.record,
                from_loads=from_loads,
                require_ddl_capture=require_ddl_capture,
            )
        if pending:
            arm_tables(source.dsn, config.pipeline, source.name, pending, surrogates)
            pending.clear()
        return engine

    return open_engine


def attach_gold(
    config: PipelineConfig,
    lake: Lake,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> tuple[GoldScheduler | None, Callable[[BatchReport], None] | None]:
    """The config's gold scheduler (started) and an `on_batch` that also tells it of each
    batch; (None, `on_batch`) when the config has no models. Close the scheduler after the
    runner stopped."""
    from tidemark.gold import build_scheduler

    gold = build_scheduler(config, lake)
    if gold is None:
        return None, on_batch
    gold.start()
    return gold, gold_on_batch(gold, on_batch)


class _Pinning(Protocol):
    def on_batch(self, batch_id: int, touched: Collection[str]) -> None: ...


def gold_on_batch(
    gold: _Pinning, on_batch: Callable[[BatchReport], None] | None = None
) -> Callable[[BatchReport], None]:
    """An `on_batch` that tells the gold scheduler of consistent batches only.

    The scheduler pins its inputs' versions when told of a batch, as a transaction-consistent
    cut; after a part of a transaction committed in parts (docs/pipeline.md, "Transactions
    of any size") the lake is not one, so the tables such batches touched are told together
    with the batch that ends the transaction.
    """
    touched: set[str] = set()

    def both(report: BatchReport) -> None:
        touched.update(report.tables)
        if report.consistent:
            gold.on_batch(report.batch_id, set(touched))
            touched.clear()
        if on_batch is not None:
            on_batch(report)

    return both


def build_runner(
    config: PipelineConfig,
    *,
    state: Path,
    lake: Lake | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    keep_source_ts: bool = False,
    on_health: Callable[[str, str | None], None] | None = None,
    require_ddl_capture: bool = False,
    on_start: Callable[[str, SourceStart], None] | None = None,
    stop: threading.Event | None = None,
    load_progress: Callable[[LoadProgress], None] | None = None,
    load_done: Callable[[LoadResult], None] | None = None,
) -> tuple[EmbeddedRunner, Lake]:
    """The embedded runner for `config`, its engines' offsets under `state`.

    Every layer is first put back to the batches the batch log holds, and every source is
    reconciled with what the lake holds of it (`tidemark/startup.py`); `on_start(source,
    start)` hears what was found. With `require_ddl_capture` (`tidemark run`), opening a
    source's engine stops when the source lacks Tidemark's DDL capture and does not opt out
    (`ddl_capture: false`). The tables start-up arms are loaded first by the parallel loader
    (`tidemark/startload.py`; `stop` interrupts it, `load_progress`/`load_done` hear of each
    table's load). While the runner is idle it records, per source, that the lake is
    caught up (`sinks/progress.py`): what freshness counts from when nothing changes.

    Raises:
        SourceReplacedError, SlotInUseError: the source cannot continue this lake as it is.
    """
    from tidemark.connectors.postgres.identity import primary_keys
    from tidemark.connectors.postgres.settings import notification_topic
    from tidemark.sinks.loads import LoadLog
    from tidemark.sinks.progress import ProgressMarks
    from tidemark.startload import load_at_start
    from tidemark.startup import reconcile_source, streams_from_loads
    from tidemark.stream_processors.loading.gate import LoadGate

    lake = lake or open_lake(config)
    every = [t for source in config.sources for t in config.lake_tables_of(source)]
    for rolled in lake.roll_back_unlogged(every):  # a batch a killed process left half-done
        logger.warning("%s: rolled back to the batch log's last batch", rolled)
    marks = ProgressMarks(config.lake, storage_options=config.storage_options)
    loads = LoadLog(config.lake, app_id=config.app_id, storage_options=config.storage_options)
    max_batch = min(8192, max(512, config.batching.max_events))
    layers = {table: config.layers_for(table) for table in every}
    sources = []
    keys: dict[str, tuple[str, ...]] = {}
    opened: list[Engine] = []  # engines opened while their sources' tables loaded
    try:
        for source in config.sources:
            start = reconcile_source(config, source, lake)
            for reason in start.reasons:
                logger.warning("source %s: %s", source.name, reason)
            if on_start is not None:
                on_start(source.name, start)
            from_loads, resnapshot = False, list(start.resnapshot)
            decoder = Decoder(
                source.kind,
                key_columns={source.lake_table(t): tuple(k) for t, k in source.keys.items()},
            )
            early: Engine | None = None
            if source.kind == "postgres":
                before = len(opened)
                open_now = functools.partial(
                    _open_engine,
                    config,
                    source,
                    state,
                    max_batch,
                    decoder,
                    start.record,
                    from_loads=True,
                    require_ddl_capture=require_ddl_capture,
                )
                plan = load_at_start(
                    config,
                    source,
                    start,
                    lake,
                    stop=stop,
                    progress=load_progress,
                    done=load_done,
                    # Called during this iteration, once the loads' slot exists: Debezium's
                    # start-up (about 4 s of connecting, validating and starting its task)
                    # runs beside the loads; what it streams waits in its bounded queue.
                    streams_soon=lambda: opened.append(open_now()),  # noqa: B023
                )
                early = opened[before] if len(opened) > before else None
                from_loads = plan.streams_from_loads(config, source)
                resnapshot = plan.resnapshot  # the loader took the others
                found = primary_keys(source.dsn, list(source.tables))
                keys.update({source.lake_table(t): k for t, k in found.items()})
                keys.update(source_keys(source))
            held = {t for t in config.lake_tables_of(source) if lake.holds_rows(t, layers[t])}
            streamed = [source.lake_table(t) for t in config.streamed_tables(source)]
            tracker = SourceTracker(
                start.record,
                lake_table=source.lake_table,
                # what Debezium's initial snapshot arms: nothing when the loader armed them
                tables=[] if from_loads or streams_from_loads(start.record) else streamed,
                held=held,
            )
            sources.append(
                SourceSpec(
                    name=source.name,
                    open_engine=_engine_factory(
                        config,
                        source,
                        state,
                        max_batch,
                        decoder,
                        tracker,
                        resnapshot,
                        require_ddl_capture,
                        from_loads,
                        early,
                    ),
                    decoder=decoder,
                    resume_position=functools.partial(_resume_position, tracker),
                    request_snapshot=_snapshot_requester(config, source),
                    tracker=tracker,
                    notifications=notification_topic(source.name),
                    epoch=start.record.epoch,
                )
            )
    except BaseException:  # the runner never got them: close them here
        for engine in opened:
            engine.close()
        raise
    settings = RunnerSettings(
        max_events=config.batching.max_events,
        max_latency_ms=config.batching.max_latency_ms,
        layers=layers,
        keys=keys,
        # Idle, the lake records the stream's progress once per heartbeat (at most every
        # 2 s): what lets the slot advance and `verify` see the lake caught up.
        checkpoint_s=max(0.2, min(2.0, config.debezium.heartbeat_ms / 1000)),
    )
    runner = EmbeddedRunner(
        sources,
        lake,
        settings=settings,
        on_batch=on_batch,
        keep_source_ts=keep_source_ts,
        on_idle=marks.caught_up,
        on_health=on_health,
        gate=LoadGate(loads.latest),
    )
    return runner, lake

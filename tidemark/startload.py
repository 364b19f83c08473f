"""The parallel loader at start-up: the tables start-up reconciliation arms, loaded first.

`tidemark/startup.py` decides, from what the lake holds, how each source starts: fresh
(every table snapshotted, on a new slot) or streaming from the lake's offsets with some
tables snapshotted again (`SourceStart.resnapshot`: new to the config, removed from the lake,
restored from an older copy). This module takes those tables from Debezium and loads them
with the parallel loader before the source's engine opens (`tidemark/loading.py`), except
tables configured `snapshot: {loader: debezium}`, which keep `arm_tables` (Debezium's
incremental snapshot, reconciled).

How the hand-over stays exact:
- fresh: a stale slot is dropped (unless an unfinished load follows it: its resume needs
  the changes since its first snapshot point), the slot is created before the loads'
  markers, and the engine then streams from it without a snapshot of its own
  (`snapshot.mode=no_data`, `prepare_capture(keep_slot=True)`); changes the snapshot holds
  are dropped by the replay guard and the load gate (`stream_processors/loading/gate.py`).
- streaming: the engine resumes from the lake's offsets, behind the loads' markers: the
  same guard and gate drop what each load holds.
A loaded table is recorded as armed in the source's record (`armed[table] = load-<id>`),
which the runner's next commit writes to the batch log; a
crash before that finds the table unarmed and loads it again, reconciled with what the lake
holds (identical rows add nothing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.kernel.positions import LOAD_PREFIX
from tidemark.sinks.lake import Lake
from tidemark.sinks.loads import LoadState
from tidemark.startup import SourceStart
from tidemark.stream_processors.loading.spec import LoadProgress, LoadResult

logger = logging.getLogger(__name__)


@dataclass
class LoadPlan:
    """The loads one source needs before its engine opens.

    Attributes:
        tables: config names of the tables to load, in config order.
        fresh: the source starts on a new slot; with streamed tables loaded here, its engine
            streams from the loads' slot without a snapshot of its own.
        debezium: streamed tables left to Debezium's snapshot.
        resnapshot: the tables Debezium snapshots again while it streams (`arm_tables`):
            start-up's that the loader did not take, and on a fresh start from the loads'
            slot the `debezium` ones (the engine takes no initial snapshot then).
    """

    tables: list[str] = field(default_factory=list)
    fresh: bool = False
    debezium: list[str] = field(default_factory=list)
    resnapshot: list[str] = field(default_factory=list)

    def streams_from_loads(self, config: PipelineConfig, source: SourceConfig) -> bool:
        """Whether the engine starts from the loads' slot (`snapshot.mode=no_data`)."""
        streamed = set(config.streamed_tables(source))
        return self.fresh and any(t in streamed for t in self.tables)


def plan_loads(
    config: PipelineConfig, source: SourceConfig, start: SourceStart, states: dict[str, LoadState]
) -> LoadPlan:
    """Which tables of `source` the parallel loader loads before its engine opens: on a fresh
    start every streamed table, else those start-up snapshots again; loads cut short; and
    reference and watermark tables the lake has not loaded yet."""
    streamed = set(config.streamed_tables(source))
    plan = LoadPlan(fresh=start.fresh)
    for table in source.tables:
        lake_table = source.lake_table(table)
        state = states.get(lake_table)
        unfinished = state is not None and state.status == "loading"
        if table not in streamed:
            if state is None or unfinished:
                plan.tables.append(table)
            continue
        if config.snapshot_for(source, lake_table).loader == "debezium":
            plan.debezium.append(table)
            continue
        if start.fresh or table in start.resnapshot or unfinished:
            plan.tables.append(table)
    return plan


def load_at_start(
    config: PipelineConfig,
    source: SourceConfig,
    start: SourceStart,
    lake: Lake,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    done: Callable[[LoadResult], None] | None = None,
    streams_soon: Callable[[], None] | None = None,
) -> LoadPlan:
    """Load what `plan_loads` says and record the loaded tables as armed in `start.record`;
    the plan's `resnapshot` says what is left to Debezium.

    `streams_soon()` is called once the loads' slot exists, before the first row is
    read, when the engine will stream from it: the runtime opens the engine then, so
    Debezium's start-up (seconds of connecting and validating) overlaps the loads.

    Raises:
        SourceUnavailable, SourceConfigError, UsageError, InterruptedError: as the loads.
    """
    from tidemark.connectors.postgres.exported import ensure_slot
    from tidemark.connectors.postgres.identity import drop_slot_when_free
    from tidemark.connectors.postgres.settings import replication_name
    from tidemark.connectors.postgres.setup import prepare_source, table_shapes
    from tidemark.loading import run_loads, signal_table_of
    from tidemark.sinks.loads import LoadLog

    streamed = config.streamed_tables(source)
    states = LoadLog(
        config.lake, app_id=config.app_id, storage_options=config.storage_options
    ).latest()
    plan = plan_loads(config, source, start, states)
    plan.resnapshot = [t for t in start.resnapshot if t in streamed and t not in plan.tables]
    if plan.streams_from_loads(config, source):
        plan.resnapshot += [t for t in plan.debezium if t not in plan.resnapshot]
    if not plan.tables:
        return plan
    if streamed:  # the marker's table and the stream exist before any marker
        slot = replication_name(config.pipeline, source.name)
        prepare_source(
            source.dsn,
            tables=streamed,
            slot=slot,
            publication=slot,
            signal_table=signal_table_of(config, source),
            keys=source.keys,
        )
        if plan.streams_from_loads(config, source):
            resuming = any(
                states.get(source.lake_table(t)) is not None
                and states[source.lake_table(t)].status == "loading"
                for t in plan.tables
            )
            if not resuming and drop_slot_when_free(source.dsn, slot):
                logger.info("dropped replication slot %s: the tables are loaded anew", slot)
            ensure_slot(source.dsn, slot)
            if streams_soon is not None:
                streams_soon()
    shapes = table_shapes(source.dsn, plan.tables)
    keys = {t: tuple(shapes[t].key) for t in plan.tables}
    logger.info("source %s: loading %s", source.name, ", ".join(plan.tables))
    results = run_loads(
        config,
        source,
        plan.tables,
        keys=keys,
        stop=stop,
        progress=progress,
        done=done,
        check_after_handover=True,
        epoch=start.record.epoch,
    )
    by_table = {r.table: r for r in results}
    for table in plan.tables:
        name = source.lake_table(table)
        lake.reload(name)  # the loads wrote beside this lake object
        if table not in streamed or name not in by_table:
            continue
        start.record.armed[name] = LOAD_PREFIX + by_table[name].state.load_id
        start.record.arming.pop(name, None)
        # Not in `record.tables`: the highest of those seeds where the source's stream is
        # taken to resume, and the loads' markers are ahead of the slot; the table's first
        # streamed batch records its position.
    return plan


def arm_sources(
    config: PipelineConfig,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    done: Callable[[LoadResult], None] | None = None,
) -> dict[str, LoadPlan]:
    """Start-up's loads alone, without streaming after them (benchmarks, tests, a load
    before the first `run`): each Postgres source reconciled with the lake, then its tables
    loaded as `load_at_start` does. What it arms is recorded by the next run's first commit
    (until then that run finds the tables unarmed and loads them again, reconciled: the
    lake's rows are kept, nothing is doubled).

    Raises:
        SourceReplacedError, SlotInUseError, SourceUnavailable, UsageError,
        InterruptedError: as start-up and the loads.
    """
    from tidemark.pipeline import open_lake
    from tidemark.startup import reconcile_source

    lake = open_lake(config)
    try:
        plans = {}
        for source in config.sources:
            if source.kind != "postgres":
                continue
            start = reconcile_source(config, source, lake)
            plans[source.name] = load_at_start(
                config, source, start, lake, stop=stop, progress=progress, done=done
            )
        return plans
    finally:
        lake.close()

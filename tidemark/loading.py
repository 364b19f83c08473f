"""Wiring of the parallel loader: which tables a start must load, with which settings.

A source's tables are armed (loaded into the lake before their changes are streamed into
it) when start-up reconciliation says so (`tidemark/startload.py`: a fresh source, a table
added to the config or missing from the lake) and when a load was cut short (a crash,
Ctrl+C: it resumes). Tables configured `snapshot: {loader: debezium}` are left to
Debezium's snapshot; reference tables (`refresh`) and watermark-captured tables (`capture`)
are loaded here too but never streamed. Loads run before the source's engine starts, one
table after another (`snapshot.tables_at_once`), each with its own workers; the source's
replication slot exists first, so nothing committed meanwhile is lost (docs/loading.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.postgres.capture import signal_table_name
from tidemark.kernel.names import split_table
from tidemark.loadcheck import LoadCheck, check_loaded
from tidemark.loads_config import RangesConfig
from tidemark.sinks.lake import Lake
from tidemark.sinks.loads import LoadLog
from tidemark.stream_processors.loading.load import TableLoad
from tidemark.stream_processors.loading.polling import WatermarkPoller
from tidemark.stream_processors.loading.schedule import Job
from tidemark.stream_processors.loading.spec import (
    BatchIds,
    Check,
    LoadOptions,
    LoadProgress,
    LoadResult,
    RangeSpec,
    TableSpec,
    lake_ids,
)

logger = logging.getLogger(__name__)


def signal_table_of(config: PipelineConfig, source: SourceConfig) -> str:
    """The pipeline's signal table of a source (where a load's marker goes)."""
    return signal_table_name(config.pipeline, source.name)


def options_for(config: PipelineConfig, source: SourceConfig, lake_table: str) -> LoadOptions:
    """The loader's options of one lake table, from `snapshot` (docs/loading.md)."""
    settings = config.snapshot_for(source, lake_table)
    ranges = settings.ranges
    if isinstance(ranges, RangesConfig):
        spec = RangeSpec("column", ranges.column, ranges.by)
    else:
        spec = RangeSpec("key" if ranges == "key" else "ctid")
    return LoadOptions(
        workers=settings.max_workers or 2,
        rows_per_second=settings.rows_per_second,
        rows_per_range=settings.rows_per_range or 500_000,
        ranges=spec,
        replica_dsn=settings.dsn,
    )


def spec_for(
    config: PipelineConfig, source: SourceConfig, table: str, key: Sequence[str]
) -> TableSpec:
    """The loader's view of one configured table (`key`: the capture key, or none)."""
    schema, name = split_table(table)
    lake_table = source.lake_table(table)
    own = source.keys.get(table)
    return TableSpec(
        lake_table,
        source.name,
        schema,
        name,
        tuple(own or key),
        config.layers_for(lake_table),
        unique_key=not own or tuple(own) == tuple(key),
        excluded=frozenset(
            column
            for column, (_, policy) in config.classified(lake_table).items()
            if policy.raw == "drop"
        ),
    )


def make_check(config: PipelineConfig, source: SourceConfig) -> Check:
    """The end-of-load comparison of one table (rows and row hashes)."""

    def check(cursor: Any, spec: TableSpec, version: int | None = None) -> LoadCheck:
        table = next(t for t in source.tables if source.lake_table(t) == spec.table)
        return check_loaded(
            cursor,
            source_table=table,
            lake_table=spec.table,
            root=config.lake,
            storage_options=config.storage_options,
            key_columns=tuple(source.keys.get(table, ())),
            excluded=spec.excluded,
            version=version,
        )

    return check


def run_loads(
    config: PipelineConfig,
    source: SourceConfig,
    tables: Sequence[str],
    *,
    keys: dict[str, tuple[str, ...]],
    ids: BatchIds | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    done: Callable[[LoadResult], None] | None = None,
    check: bool = True,
    check_after_handover: bool = False,
    epoch: int = 0,
) -> list[LoadResult]:
    """Load `tables` of `source` (config names), `snapshot.tables_at_once` at a time.

    Args:
        keys: config table name -> its capture key (empty for a table without one).
        progress: told of each table's `LoadProgress` as its load begins.
        done: told of each table's result as its load ends.
        check_after_handover: compare each table with its snapshot after its hand-over, on a
            thread of its own (the result's `checking`): start-up does not wait for it.
        epoch: the source's position epoch (`SourceRecord.epoch`): the loads' positions
            sort with the stream's.

    Raises:
        SourceUnavailable, UsageError, InterruptedError: as `TableLoad.run`.
    """
    lake = open_lake_of(config, polled=False)
    polled = open_lake_of(config, polled=True)
    loads = LoadLog(config.lake, app_id=config.app_id, storage_options=config.storage_options)
    ids = ids or BatchIds(lake_ids(lake))
    polled_ids = BatchIds(lake_ids(polled))
    stop = stop or threading.Event()
    streamed = set(config.streamed_tables(source))

    def one(table: str) -> LoadResult:
        spec = spec_for(config, source, table, keys.get(table, ()))
        view = LoadProgress(spec.table)
        if progress is not None:
            progress(view)
        log_based = table in streamed
        capture = config.capture_for(spec.table)
        settings = config.snapshot_for(source, spec.table)
        load = TableLoad(
            spec,
            lake=lake if log_based else polled,
            loads=loads,
            dsn=source.dsn,
            signal_table=signal_table_of(config, source) if log_based else None,
            options=options_for(config, source, spec.table),
            ids=ids if log_based else polled_ids,
            progress=view,
            stop=stop,
            check=make_check(config, source) if check and settings.check == "hash" else None,
            check_after_handover=check_after_handover,
            kind=None if log_based else "refresh",
            watermark_column=capture.column if capture.mode == "watermark" else None,
            epoch=epoch,
        )
        result = load.run()
        if done is not None:
            done(result)
        return result

    try:
        at_once = (
            max(
                (config.snapshot_for(source, source.lake_table(t)).tables_at_once or 1)
                for t in tables
            )
            if tables
            else 1
        )
        if at_once <= 1:
            return [one(t) for t in tables]
        with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="tm-tables") as pool:
            return list(pool.map(one, tables))
    finally:
        lake.close()
        polled.close()


def open_lake_of(config: PipelineConfig, *, polled: bool) -> Lake:
    """A lake object for loads: the pipeline's own app id for streamed tables; for tables
    no stream writes (reference and watermark-captured tables) an app id of their own
    (`<app id>:polled`), so their batches never interleave with the stream's."""
    return Lake(
        config.lake,
        app_id=f"{config.app_id}:polled" if polled else config.app_id,
        storage_options=config.storage_options,
        cache_bytes=config.lake_cache_mb * 2**20,
        write_modes={  # tables are created as the pipeline's writers would create them
            table: config.write_mode_for(table)
            for source in config.sources
            for table in config.lake_tables_of(source)
        },
    )


def schedule_jobs(
    config: PipelineConfig, keys: dict[str, dict[str, tuple[str, ...]]]
) -> tuple[list[Job], Lake | None]:
    """The periodic work of every source: reference refreshes and watermark polls.

    Args:
        keys: source -> config table -> its capture key.

    Returns:
        The jobs, and the lake they write through (close it when they are stopped).
    """
    jobs: list[Job] = []
    lake = open_lake_of(config, polled=True)
    loads = LoadLog(config.lake, app_id=config.app_id, storage_options=config.storage_options)
    ids = BatchIds(lake_ids(lake))
    for source in config.sources:
        if source.kind != "postgres":
            continue
        for table in source.tables:
            lake_table = source.lake_table(table)
            key = keys.get(source.name, {}).get(table, ())
            refresh = config.refresh_for(lake_table)
            capture = config.capture_for(lake_table)
            if refresh is not None:
                jobs.append(
                    Job(
                        f"refresh of {lake_table}",
                        refresh.every,
                        _refresher(config, source, table, key, lake, loads, ids),
                        first=refresh.every,
                    )
                )
            elif capture.mode == "watermark" and capture.column:
                poller = WatermarkPoller(
                    spec_for(config, source, table, key),
                    lake=lake,
                    loads=loads,
                    dsn=config.snapshot_for(source, lake_table).dsn or source.dsn,
                    column=capture.column,
                    overlap_s=capture.overlap,
                    ids=ids,
                )
                jobs.append(Job(f"poll of {lake_table}", capture.every, poller.poll))
                jobs.append(
                    Job(
                        f"key diff of {lake_table}",
                        capture.deletes_every,
                        poller.diff,
                        first=capture.deletes_every,
                    )
                )
    if not jobs:
        lake.close()
        return [], None
    return jobs, lake


def _refresher(
    config: PipelineConfig,
    source: SourceConfig,
    table: str,
    key: tuple[str, ...],
    lake: Lake,
    loads: LoadLog,
    ids: BatchIds,
) -> Callable[[], LoadResult]:
    def refresh() -> LoadResult:
        spec = spec_for(config, source, table, key)
        result = TableLoad(
            spec,
            lake=lake,
            loads=loads,
            dsn=source.dsn,
            signal_table=None,
            options=options_for(config, source, spec.table),
            ids=ids,
            check=make_check(config, source),
            kind="refresh",
        ).run()
        logger.info(
            "refreshed %s: %d rows, %d new version(s), check %s",
            spec.table,
            result.rows,
            result.versions,
            getattr(result.check, "status", "-"),
        )
        return result

    return refresh


def capture_keys(config: PipelineConfig) -> dict[str, dict[str, tuple[str, ...]]]:
    """source -> config table -> its capture key (the primary key, or the replica
    identity index; empty for a table without one), read from each Postgres source."""
    from tidemark.connectors.postgres.setup import table_shapes

    return {
        source.name: {t: tuple(s.key) for t, s in table_shapes(source.dsn, source.tables).items()}
        for source in config.sources
        if source.kind == "postgres"
    }

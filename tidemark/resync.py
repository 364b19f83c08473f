"""`tidemark resync`: snapshot chosen tables again, reconciled with the lake, while streaming
goes on.

How it works with the embedded runtime: the request is a signal in the source
(`startup.arm_tables`), which Debezium reads from the change stream. A running pipeline takes
it up at once; a stopped one when it next starts (it resumes from the lake's offsets, which
precede the signal). The pipeline follows the snapshot through Debezium's notifications and
records its progress and its completion in the lake (`SourceRecord.arming`/`armed`), which is
what `resync` watches: it never writes the lake itself while a pipeline runs. Interrupting
`resync` stops only the watching; running it again for a table whose snapshot is under way
watches that one instead of asking again. A pipeline killed during the snapshot completes it
after its restart (Debezium's offsets, in the lake, say which chunk it was at).

A source that is another database than the lake was built from (`run` refuses it) is
adopted: with no pipeline running, the lake's record of it gets the new database and the
next position epoch, and the next start snapshots every table of it, reconciled with the
lake (unchanged rows add nothing, changed rows one version, vanished rows are closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.postgres.capture import signal_table_name
from tidemark.connectors.postgres.identity import source_identity
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.setup import connect
from tidemark.errors import ConfigError
from tidemark.kernel.errors import UsageError
from tidemark.kernel.positions import SourceRecord
from tidemark.lock import PipelineLock, is_running
from tidemark.sinks.lake import Lake
from tidemark.startup import arm_tables

logger = logging.getLogger(__name__)


@dataclass
class Request:
    """What `resync` did for one source.

    Attributes:
        source: the source.
        tables: the lake tables to snapshot again.
        signal: the snapshot's id (None when a database was adopted: all tables at start).
        watching: lake tables whose snapshot was already under way (not asked again).
        running: who runs the pipeline (None: the next start performs it).
        adopted: a new database was adopted for the source.
        estimates: lake table -> about how many rows the source holds (progress bars).
    """

    source: str
    tables: list[str]
    signal: str | None
    watching: dict[str, str] = field(default_factory=dict)
    running: str | None = None
    adopted: bool = False
    estimates: dict[str, int] = field(default_factory=dict)


def select_tables(
    config: PipelineConfig, tables: Sequence[str], source: str | None
) -> dict[str, list[str]]:
    """Source name -> the `schema.table` names chosen by `--table` / `--source` (all by
    default).

    Raises:
        ConfigError: a name that no source captures.
    """
    chosen: dict[str, list[str]] = {}
    sources = [s for s in config.sources if source in (None, s.name)]
    if not sources:
        raise ConfigError(
            "sources", f"no source named `{source}`", hint=f"pick one of {_names(config)}"
        )
    wanted_names: list[str | None] = list(tables) or [None]
    for wanted in wanted_names:
        found = False
        for s in sources:
            for table in s.tables:
                if wanted in (None, table, s.lake_table(table)):
                    names = chosen.setdefault(s.name, [])
                    if table not in names:
                        names.append(table)
                    found = True
        if not found:
            raise ConfigError(
                "sources[].tables",
                f"no captured table `{wanted}`",
                hint="name it as schema.table or source.schema.table, as in the config",
            )
    return chosen


def _names(config: PipelineConfig) -> list[str]:
    return [s.name for s in config.sources]


def request_resync(
    config: PipelineConfig,
    *,
    state: Path,
    tables: Sequence[str] = (),
    source: str | None = None,
) -> list[Request]:
    """Ask for the chosen tables to be snapshotted again (see the module docstring).

    Raises:
        ConfigError: an unknown source or table.
        UsageError: the pipeline never ran against this source (no signal table yet), a
            new database must be adopted while the pipeline runs, or the pipeline is
            distributed (Kafka Connect has no signal table of Tidemark's).
        SourceUnavailable: the source cannot be reached.
    """
    if config.kafka is not None:
        raise UsageError(
            f"pipeline `{config.pipeline}` is distributed (a `kafka:` section): resync works "
            "through the embedded engine's signal table and notifications, which a Kafka "
            "Connect connector does not have",
            hint="not supported for the distributed runtime yet (docs/distributed.md)",
        )
    running = is_running(state, config.pipeline, config.lake)
    lake = Lake(config.lake, app_id=config.app_id, storage_options=config.storage_options)
    try:
        records = {k: SourceRecord.from_json(v) for k, v in lake.source_records().items()}
        requests = []
        by_name = {s.name: s for s in config.sources}
        for name, names in select_tables(config, tables, source).items():
            chosen = by_name[name]
            record = records.get(chosen.name)
            identity = source_identity(chosen.dsn)
            if record is not None and record.system_id not in (None, identity.system_id):
                requests.append(_adopt(config, chosen, lake, records, state, running))
                continue
            requests.append(_signal(config, chosen, names, record, running))
        return requests
    finally:
        lake.close()


def _signal(
    config: PipelineConfig,
    source: SourceConfig,
    names: list[str],
    record: SourceRecord | None,
    running: str | None,
) -> Request:
    if not _signal_table_exists(source.dsn, signal_table_name(config.pipeline, source.name)):
        raise UsageError(
            f"pipeline `{config.pipeline}` has not run against source `{source.name}` yet",
            hint="its first `tidemark run` snapshots every table; resync is for later",
        )
    arming = record.arming if record is not None else {}
    watching = {
        source.lake_table(t): arming[source.lake_table(t)].id
        for t in names
        if source.lake_table(t) in arming
    }
    ask = [t for t in names if source.lake_table(t) not in watching]
    surrogates = {t: k[0] for t, k in source.keys.items() if len(k) == 1}
    signal = arm_tables(source.dsn, config.pipeline, source.name, ask, surrogates) if ask else None
    return Request(
        source.name,
        [source.lake_table(t) for t in ask],
        signal,
        watching,
        running,
        estimates=_estimates(source, names),
    )


def _adopt(
    config: PipelineConfig,
    source: SourceConfig,
    lake: Lake,
    records: dict[str, SourceRecord],
    state: Path,
    running: str | None,
) -> Request:
    """Record the source's new database in the lake, with the next position epoch."""
    if running is not None:
        raise UsageError(
            f"source `{source.name}` is another database than the lake's, and {running}",
            hint="stop it, then run `tidemark resync` again",
        )
    identity = source_identity(source.dsn)
    old = records[source.name]
    with PipelineLock(state, config.pipeline, config.lake):
        adopted = SourceRecord(
            source.name,
            system_id=identity.system_id,
            database=identity.database,
            database_oid=identity.database_oid,
            slot=replication_name(config.pipeline, source.name),
            epoch=old.epoch + 1,
            tables=dict(old.tables),
            rebuild=True,
        )
        everything = {name: r.to_json() for name, r in records.items()}
        everything[source.name] = adopted.to_json()
        lake.commit_batch(
            lake.highest_batch_id() + 1,
            [],
            source_positions={},
            started_at=datetime.now(UTC),
            sources=everything,
        )
    logger.warning(
        "source %s: adopted database %s (cluster %s) as position epoch %d",
        source.name,
        identity.database,
        identity.system_id,
        adopted.epoch,
    )
    return Request(
        source.name,
        [source.lake_table(t) for t in source.tables],
        None,
        adopted=True,
        estimates=_estimates(source, list(source.tables)),
    )


def _signal_table_exists(dsn: str, table: str) -> bool:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            row = cur.fetchone()
            return row is not None and bool(row[0])
    finally:
        conn.close()


def _estimates(source: SourceConfig, tables: list[str]) -> dict[str, int]:
    """About how many rows each table holds (the planner's estimate; 0 when unknown)."""
    conn = connect(source.dsn)
    out: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(
                    "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                    (table,),
                )
                row = cur.fetchone()
                out[source.lake_table(table)] = int(row[0]) if row else 0
    finally:
        conn.close()
    return out


@dataclass(frozen=True)
class Progress:
    """Where one table's requested snapshot stands, as the lake records it."""

    table: str
    rows: int
    done: bool


def progress(lake: Lake, requests: Sequence[Request]) -> list[Progress]:
    """Each requested table's progress, from the lake's records (the pipeline writes them)."""
    records = {k: SourceRecord.from_json(v) for k, v in lake.source_records().items()}
    out = []
    for request in requests:
        record = records.get(request.source)
        wanted = {t: request.signal for t in request.tables}
        wanted.update(request.watching)
        for table, snapshot in wanted.items():
            if record is None:
                out.append(Progress(table, 0, False))
                continue
            arming = record.arming.get(table)
            armed_by = record.armed.get(table) or ""
            if request.adopted:
                done = not record.rebuild and bool(armed_by) and arming is None
            else:  # a signal of several parts gives its parts ids `<signal>-<n>`
                done = arming is None and snapshot is not None and armed_by.startswith(snapshot)
            out.append(Progress(table, arming.rows if arming else 0, done))
    return out


def watch(
    config: PipelineConfig,
    requests: Sequence[Request],
    *,
    on_progress: Callable[[list[Progress]], None],
    stop: Callable[[], bool],
    interval_s: float = 1.0,
) -> bool:
    """Report progress until every requested table is armed, or `stop()`; True when done."""
    import time

    lake = Lake(config.lake, app_id=config.app_id, storage_options=config.storage_options)
    try:
        while True:
            state = progress(lake, requests)
            on_progress(state)
            if all(p.done for p in state):
                return True
            if stop():
                return False
            time.sleep(interval_s)
    finally:
        lake.close()

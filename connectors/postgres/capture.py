"""Open an embedded Debezium engine for one Postgres source of one pipeline.

Wires the pieces in order: check and prepare the source (`setup`), build the connector
properties (`settings`), start the engine with its offsets under the state directory, and ask
for an incremental snapshot of tables added to the config since the last run. The first run
snapshots every table (op `r`) and then streams; later runs resume from the acknowledged offset.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from psycopg2 import sql

from tidemark.connectors.debezium.engine import EmbeddedEngine
from tidemark.connectors.debezium.jvm import DEFAULT_HEAP
from tidemark.connectors.postgres.settings import (
    HEARTBEAT_PREFIX,
    connector_settings,
    replication_name,
)
from tidemark.connectors.postgres.setup import connect, prepare_source

log = logging.getLogger(__name__)


def engine_dir(state: Path, pipeline: str, source: str) -> Path:
    """Where one source's offsets and table list live: `<state>/debezium/<pipeline>/<source>`."""
    return Path(state) / "debezium" / pipeline / source


def _known_tables(directory: Path) -> set[str] | None:
    path = directory / "tables.json"
    if not path.exists():
        return None
    return set(json.loads(path.read_text())["tables"])


def _remember_tables(directory: Path, tables: Sequence[str]) -> None:
    path = directory / "tables.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tables": sorted(tables)}))
    tmp.replace(path)


def signal_table_name(pipeline: str, source: str, schema: str = "public") -> str:
    """The signal table of one source of one pipeline (`<schema>.<slot>_signal`)."""
    return f"{schema}.{replication_name(pipeline, source)[:56]}_signal"


def request_snapshot(
    dsn: str, signal_table: str, tables: Sequence[str], condition: str | None = None
) -> str:
    """Insert an `execute-snapshot` signal: Debezium snapshots `tables` while it streams.

    `condition` (SQL over the table's columns) limits the snapshot to matching rows, e.g. a
    partition's bound when it is attached.
    """
    signal_id = f"tidemark-{uuid.uuid4()}"
    request: dict[str, object] = {"data-collections": list(tables), "type": "incremental"}
    if condition:
        request["additional-conditions"] = [
            {"data-collection": table, "filter": condition} for table in tables
        ]
    data = json.dumps(request)
    schema, name = signal_table.split(".", 1)
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (id, type, data) VALUES (%s, 'execute-snapshot', %s)"
                ).format(sql.Identifier(schema, name)),
                (signal_id, data),
            )
    finally:
        conn.close()
    log.info("requested an incremental snapshot of %s (signal %s)", ", ".join(tables), signal_id)
    return signal_id


def open_postgres_engine(
    *,
    pipeline: str,
    source: str,
    dsn: str,
    tables: Sequence[str],
    state: Path,
    heap: str = DEFAULT_HEAP,
    heartbeat_ms: int = 10_000,
    signal_schema: str = "public",
    extra: Mapping[str, str] | None = None,
    queue_chunks: int = 4,
    max_batch: int = 4096,
    slot: str | None = None,
    publication: str | None = None,
    signals: bool = True,
    heartbeat_writes: bool = True,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> EmbeddedEngine:
    """Prepare the source and start its engine (call `close()` when done, even on error).

    Args:
        pipeline: pipeline name (with `source`, names the slot and publication).
        source: source name; Debezium's topic prefix.
        dsn: Postgres URL.
        tables: `schema.table` names to capture.
        state: the state directory (offsets under `debezium/<pipeline>/<source>/`).
        heap: JVM heap (first engine in the process only).
        heartbeat_ms: Debezium heartbeat interval (keeps an idle slot from holding WAL).
        signal_schema: schema for the signal table `<slot>_signal` (captured, not delivered).
        extra: extra Debezium properties (override ours).
        slot: replication slot; default `tidemark_<pipeline>_<source>`.
        publication: publication; default the slot name.
        signals: make a signal table so tables added later get an incremental snapshot.
        heartbeat_writes: on each heartbeat, write a logical message into the captured
            database so the slot advances while the captured tables are idle.
        keys: `keys` overrides per `schema.table` (checked against the tables' columns).

    Raises:
        SourceUnavailable: the database cannot be reached.
        SourceConfigError: missing rights, tables without key, no Java, bad properties.
    """
    slot = slot or replication_name(pipeline, source)
    publication = publication or slot
    signal_table = f"{signal_schema}.{slot[:56]}_signal" if signals else None
    report = prepare_source(
        dsn,
        tables=tables,
        slot=slot,
        publication=publication,
        signal_table=signal_table,
        keys=keys,
    )
    directory = engine_dir(state, pipeline, source)
    directory.mkdir(parents=True, exist_ok=True)
    known = _known_tables(directory)
    offsets_exist = (directory / "offsets.dat").exists()
    new_tables = [t for t in tables if known is not None and t not in known]
    if offsets_exist and new_tables and signal_table:
        request_snapshot(dsn, signal_table, new_tables)
    elif not offsets_exist and report.slot_exists:
        log.warning(
            "slot %s exists but there are no offsets in %s: snapshotting again", slot, directory
        )
    props = connector_settings(
        name=source,
        dsn=dsn,
        tables=tables,
        slot=slot,
        publication=publication,
        heartbeat_ms=heartbeat_ms,
        signal_table=signal_table,
        heartbeat_writes=heartbeat_writes,
    )
    engine = EmbeddedEngine(
        props,
        offsets_dir=directory,
        log_dir=Path(state) / "debezium",
        heap=heap,
        queue_chunks=queue_chunks,
        max_batch=max_batch,
        extra=extra,
        hidden=[f"{source}.{signal_table}"] if signal_table else [],
        # `<source>.message` also carries the DDL capture's messages: only these are shown.
        hidden_messages=[HEARTBEAT_PREFIX],
    )
    engine.start()
    _remember_tables(directory, tables)
    return engine

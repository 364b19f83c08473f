"""Open an embedded Debezium engine for one Postgres source of one pipeline.

Wires the pieces in order: check and prepare the source (`setup`), build the connector
properties (`settings`), and start the engine with its offsets under the state directory.
Without offsets Debezium snapshots every table (op `r`) and then streams; with offsets it
resumes from them. Which offsets an engine gets, and which tables are snapshotted again
while it streams (`request_snapshot`), is decided from the lake (`tidemark/startup.py`).
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
from tidemark.connectors.postgres.objects import SCHEMA
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


def signal_table_name(pipeline: str, source: str, schema: str = SCHEMA) -> str:
    """The signal table of one source of one pipeline (`_tidemark.<slot>_signal`: in
    Tidemark's own schema, beside the DDL capture)."""
    return f"{schema}.{replication_name(pipeline, source)[:56]}_signal"


RESYNC_PREFIX = "tidemark-resync-"
"""Signal ids of snapshots that re-read a whole table to reconcile the lake with it: rows
the lake holds that such a snapshot does not bring are gone (`arming.py`). Other snapshots
(a partition attached, read with a condition) never delete what they do not read."""


def request_snapshot(
    dsn: str,
    signal_table: str,
    tables: Sequence[str],
    condition: str | None = None,
    *,
    reconcile: bool = False,
    surrogate_keys: Mapping[str, str] | None = None,
) -> str:
    """Insert an `execute-snapshot` signal: Debezium snapshots `tables` while it streams.

    Debezium reads the signal from the change stream, so an engine that is running takes it
    up at once and a stopped one when it next streams past it. Each table's rows arrive as
    op `r` in chunks; Debezium's notifications carry the signal's id.

    Args:
        condition: SQL over the table's columns that limits the snapshot to matching rows,
            e.g. a partition's bound when it is attached.
        reconcile: the snapshot re-reads whole tables to reconcile the lake with them (its
            id starts with `RESYNC_PREFIX`); not with a `condition`.
        surrogate_keys: table -> a unique column to read it by (tables without a primary
            key); tables with different ones go in signals of their own (`<id>-<n>`).

    Returns:
        The signal's id (also the id of the notifications it causes).
    """
    if reconcile and condition:
        raise ValueError("a snapshot read with a condition cannot reconcile the lake")
    signal_id = f"{RESYNC_PREFIX if reconcile else 'tidemark-'}{uuid.uuid4()}"
    groups: dict[str | None, list[str]] = {}
    for table in tables:
        groups.setdefault((surrogate_keys or {}).get(table), []).append(table)
    schema, name = signal_table.split(".", 1)
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            for n, (surrogate, members) in enumerate(groups.items()):
                request: dict[str, object] = {"data-collections": members, "type": "incremental"}
                if condition:
                    request["additional-conditions"] = [
                        {"data-collection": table, "filter": condition} for table in members
                    ]
                if surrogate:
                    request["surrogate-key"] = surrogate
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, type, data) VALUES (%s, 'execute-snapshot', %s)"
                    ).format(sql.Identifier(schema, name)),
                    (signal_id if n == 0 else f"{signal_id}-{n}", json.dumps(request)),
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
    signal_schema: str = SCHEMA,
    extra: Mapping[str, str] | None = None,
    queue_chunks: int = 4,
    max_batch: int = 4096,
    slot: str | None = None,
    publication: str | None = None,
    signals: bool = True,
    notifications: bool = False,
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
        signals: make the signal table (`_tidemark.<slot>_signal`, captured but never
            delivered) so tables can be snapshotted again while streaming goes on.
        notifications: deliver Debezium's notifications (records on
            `__tidemark-notifications.<source>`: a snapshot started, a table is done).
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
    if not (directory / "offsets.dat").exists() and report.slot_exists:
        log.info("slot %s exists but there are no offsets in %s: snapshotting", slot, directory)
    props = connector_settings(
        name=source,
        dsn=dsn,
        tables=tables,
        slot=slot,
        publication=publication,
        heartbeat_ms=heartbeat_ms,
        signal_table=signal_table,
        heartbeat_writes=heartbeat_writes,
        notifications=notifications,
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
    return engine

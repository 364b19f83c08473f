"""Debezium Postgres connector properties, shared by the embedded engine and Kafka Connect.

Only connector-level keys live here: the embedded engine adds offset storage and converter
settings, and the distributed runtime renders Kafka Connect configs from this same function.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from psycopg2.extensions import parse_dsn

from tidemark.connectors.decode.settings import TYPE_SETTINGS
from tidemark.connectors.errors import SourceConfigError
from tidemark.kernel.names import split_table
from tidemark.kernel.secrets import mask

CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
HEARTBEAT_PREFIX = "tidemark-heartbeat"
DDL_PREFIX = "tidemark-ddl"  # the DDL capture's messages (connectors/postgres/ddl_capture.sql)
NOTIFICATION_PREFIX = "__tidemark-notifications"
"""Debezium's notifications (snapshot started, table scanned, completed) arrive as records
on `<prefix>.<source>`, in stream order with the data (`notification.enabled.channels=sink`)."""


def notification_topic(source: str) -> str:
    """Where a source's Debezium notifications arrive (the embedded engine's destination)."""
    return f"{NOTIFICATION_PREFIX}.{source}"


_IDENTIFIER = re.compile(r"[^a-z0-9_]+")


def replication_name(pipeline: str, source: str) -> str:
    """The slot and publication name for one source of one pipeline (`tidemark_<p>_<s>`).

    Postgres slot names allow lowercase letters, digits and `_`, at most 63 characters.
    """
    name = _IDENTIFIER.sub("_", f"tidemark_{pipeline}_{source}".lower()).strip("_")
    return name[:63]


def parse_postgres_dsn(dsn: str) -> dict[str, str]:
    """Host, port, user, password and database from a URL or a `key=value` DSN.

    Raises:
        SourceConfigError: the DSN cannot be parsed or names no database.
    """
    try:
        parts = parse_dsn(dsn)
    except Exception as exc:
        raise SourceConfigError(
            f"cannot parse the Postgres DSN `{mask(dsn)}`",
            hint="use postgresql://user:password@host:port/database",
        ) from exc
    if not parts.get("dbname"):
        raise SourceConfigError(
            f"the Postgres DSN `{mask(dsn)}` names no database",
            hint="end the URL with /<database>",
        )
    return {
        "host": parts.get("host", "localhost"),
        "port": parts.get("port", "5432"),
        "user": parts.get("user", ""),
        "password": parts.get("password", ""),
        "dbname": parts["dbname"],
    }


def _literal(text: str) -> str:
    """`text` as a Java regex literal: letters, digits and `_` as they are, every other
    character as `\\x{hex}` (so commas, which separate list entries, spaces and quotes too)."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c == "_") else f"\\x{{{ord(c):x}}}" for c in text
    )


def table_regex(table: str) -> str:
    """A `table.include.list` entry matching exactly the config table `schema.table`.

    Debezium matches the list case-insensitively; `(?-i)` makes it exact, so `public.Orders`
    does not also capture `public.orders`.
    """
    schema, name = split_table(table)
    return f"^(?-i){_literal(schema)}\\.{_literal(name)}$"


def connector_settings(
    *,
    name: str,
    dsn: str,
    tables: Sequence[str],
    slot: str,
    publication: str,
    heartbeat_ms: int = 10_000,
    signal_table: str | None = None,
    heartbeat_writes: bool = True,
    notifications: bool = False,
) -> dict[str, str]:
    """The Debezium Postgres connector properties for one source.

    Args:
        name: the source name; also Debezium's `topic.prefix`, so topics are
            `<name>.<schema>.<table>`.
        dsn: connection URL (the password goes into the properties, never into logs).
        tables: `schema.table` names to capture.
        slot: replication slot (created by Debezium if missing).
        publication: publication (created for exactly these tables if missing).
        heartbeat_ms: heartbeat interval, so an idle database's slot does not hold WAL.
        signal_table: `schema.table` of the signal table for incremental snapshots.
        heartbeat_writes: on each heartbeat also write a logical message into the captured
            database. Heartbeats alone do not move the slot of a database whose captured
            tables are idle (pgoutput sends nothing for it); the message does. Its records
            arrive on `<name>.message`, beside the DDL capture's; the decoder tells them apart.
        notifications: emit Debezium's notifications as records on
            `__tidemark-notifications.<name>` (how the runtimes learn that a snapshot
            started and which tables it finished).
    """
    conn = parse_postgres_dsn(dsn)
    captured = [*tables, *([signal_table] if signal_table else [])]
    settings = {
        "connector.class": CONNECTOR_CLASS,
        "name": name,
        "topic.prefix": name,
        "database.hostname": conn["host"],
        "database.port": conn["port"],
        "database.user": conn["user"],
        "database.password": conn["password"],
        "database.dbname": conn["dbname"],
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": publication,
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(table_regex(t) for t in captured),
        "snapshot.mode": "initial",
        "provide.transaction.metadata": "true",
        "heartbeat.interval.ms": str(heartbeat_ms),
        "tombstones.on.delete": "false",
        # TRUNCATE empties the table in the lake too (Debezium skips it by default), and
        # Tidemark's DDL messages arrive in order with the rows (docs/schema-changes.md).
        "skipped.operations": "none",
        "message.prefix.include.list": f"{HEARTBEAT_PREFIX},{DDL_PREFIX}",
        "status.update.interval.ms": "1000",
        **TYPE_SETTINGS,  # exact decimals, times, intervals: what the decoder expects
    }
    if heartbeat_writes:
        # A non-transactional logical message: WAL in the captured database, so the slot can
        # advance, without BEGIN/END markers (a heartbeat table write would add a transaction).
        settings["heartbeat.action.query"] = (
            f"SELECT pg_logical_emit_message(false, '{HEARTBEAT_PREFIX}', '')"
        )
    if notifications:
        settings["notification.enabled.channels"] = "sink"
        settings["notification.sink.topic.name"] = notification_topic(name)
    if signal_table:
        settings["signal.data.collection"] = signal_table
        settings["signal.enabled.channels"] = "source"
        settings["incremental.snapshot.chunk.size"] = "4096"
    return settings

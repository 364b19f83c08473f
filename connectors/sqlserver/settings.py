"""Debezium SQL Server connector properties from a pipeline source (config/sqlserver/README.md).

Only connector-level keys live here, as for Postgres (`connectors/postgres/settings.py`):
the embedded engine adds offset storage and converters, the distributed runtime renders
Kafka Connect configs from the same function. The type settings come from
`connectors.decode.settings` so the decoder and the connector agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from tidemark.connectors.decode.settings import TYPE_SETTINGS
from tidemark.connectors.errors import SourceConfigError
from tidemark.kernel.secrets import mask

CONNECTOR_CLASS = "io.debezium.connector.sqlserver.SqlServerConnector"
DEFAULT_PORT = 1433
# The type settings that mean something to the SQL Server connector.
_SQLSERVER_TYPE_KEYS = ("time.precision.mode", "binary.handling.mode")
_TABLE = re.compile(r"^[^.\s]+\.[^.\s]+$")


@dataclass(frozen=True)
class SqlServerDsn:
    """The parts of `mssql://user:password@host:port/database?driver-option=value`."""

    host: str
    port: int
    user: str
    password: str
    database: str
    driver_options: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never show the password
        return f"SqlServerDsn({self.user}@{self.host}:{self.port}/{self.database})"


def parse_sqlserver_dsn(dsn: str) -> SqlServerDsn:
    """Parse an `mssql://` URL; query parameters become JDBC `driver.*` options.

    Raises:
        SourceConfigError: not an mssql URL, or no host, user or database.
    """
    shown = mask(dsn)
    hint = "use mssql://user:password@host:1433/database"
    try:
        parts = urlsplit(dsn)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise SourceConfigError(f"cannot parse the SQL Server DSN `{shown}`", hint=hint) from exc
    if parts.scheme not in ("mssql", "sqlserver"):
        raise SourceConfigError(f"the SQL Server DSN `{shown}` is not an mssql:// URL", hint=hint)
    database = unquote(parts.path.lstrip("/"))
    missing = [
        n
        for n, v in (("host", parts.hostname), ("user", parts.username), ("database", database))
        if not v
    ]
    if missing:
        raise SourceConfigError(
            f"the SQL Server DSN `{shown}` names no {' and no '.join(missing)}", hint=hint
        )
    return SqlServerDsn(
        host=parts.hostname or "",
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        driver_options=tuple(parse_qsl(parts.query)),
    )


def connector_settings(
    *,
    name: str,
    dsn: str,
    tables: Sequence[str],
    heartbeat_ms: int = 10_000,
    login_timeout_s: int = 10,
) -> dict[str, str]:
    """The Debezium SQL Server connector properties for one source.

    Args:
        name: the source name; Debezium's `topic.prefix`, so topics are
            `<name>.<database>.<schema>.<table>` (lake tables drop the database).
        dsn: `mssql://user:password@host:port/database[?encrypt=false&...]`; query
            parameters pass through as `driver.<key>` JDBC options.
        tables: `schema.table` names to capture; each needs CDC enabled
            (config/sqlserver/enable_cdc.sql).
        heartbeat_ms: heartbeat interval, so an idle source still moves its offsets.
        login_timeout_s: JDBC login timeout, so an unreachable server fails fast.

    Raises:
        SourceConfigError: a bad DSN or a table not written as `schema.table`.
    """
    conn = parse_sqlserver_dsn(dsn)
    bad = [t for t in tables if not _TABLE.match(t)]
    if bad:
        raise SourceConfigError(
            f"SQL Server table `{bad[0]}` is not `schema.table`", hint="for example dbo.customers"
        )
    settings = {
        "connector.class": CONNECTOR_CLASS,
        "name": name,
        "topic.prefix": name,
        "database.hostname": conn.host,
        "database.port": str(conn.port),
        "database.user": conn.user,
        "database.password": conn.password,
        "database.names": conn.database,
        "table.include.list": ",".join("^" + re.escape(t) + "$" for t in tables),
        "snapshot.mode": "initial",
        "provide.transaction.metadata": "true",
        "heartbeat.interval.ms": str(heartbeat_ms),
        "tombstones.on.delete": "false",
        # How often the connector polls the CDC change tables; the capture job that fills
        # them polls the log every 5 s by default (sys.sp_cdc_change_job @pollinginterval).
        "poll.interval.ms": "500",
        "driver.loginTimeout": str(login_timeout_s),
        "decimal.handling.mode": "precise",  # SQL Server decimals have no NaN: Connect Decimal
        **{key: TYPE_SETTINGS[key] for key in _SQLSERVER_TYPE_KEYS},
    }
    for key, value in conn.driver_options:
        settings[f"driver.{key}"] = value
    return settings


def schema_history_settings(
    *, file: str | None = None, kafka_bootstrap: str | None = None, topic: str | None = None
) -> dict[str, str]:
    """Where the SQL Server connector keeps its schema history (it needs one; Postgres not).

    The runtime chooses: the embedded engine passes a file in its state directory, Kafka
    Connect a bootstrap and topic.

    Raises:
        SourceConfigError: neither or both of `file` and `kafka_bootstrap`.
    """
    if (file is None) == (kafka_bootstrap is None):
        raise SourceConfigError(
            "the SQL Server schema history needs exactly one of a file or a Kafka bootstrap",
            hint="embedded: file=<state>/schema-history.dat; Kafka Connect: kafka_bootstrap=",
        )
    if file is not None:
        return {
            "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
            "schema.history.internal.file.filename": file,
        }
    return {
        "schema.history.internal": "io.debezium.storage.kafka.history.KafkaSchemaHistory",
        "schema.history.internal.kafka.bootstrap.servers": str(kafka_bootstrap),
        "schema.history.internal.kafka.topic": topic or "tidemark.schema-history",
    }

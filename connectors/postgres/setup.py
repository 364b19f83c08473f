"""Check and prepare a Postgres source before Debezium connects to it.

Debezium's own errors for a missing right or a table without a key arrive late and deep in a
Java stack trace; these checks fail first, with one line that says what to run. They also make
the publication (for exactly the configured tables) and the signal table used to snapshot
tables added later.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from tidemark.connectors.errors import SourceConfigError, SourceUnavailable
from tidemark.connectors.postgres import objects
from tidemark.connectors.postgres.tables import PUBLISHES_GENERATED, TableShape, describe
from tidemark.kernel.names import split_table
from tidemark.kernel.secrets import mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceReport:
    """What the checks found."""

    server_version: int
    tables: tuple[str, ...]
    created_publication: bool
    added_to_publication: tuple[str, ...]
    slot_exists: bool


# Refusals that retrying cannot cure: the server answered, and said no.
_REFUSED = re.compile(
    r"password authentication failed|authentication failed|role .* does not exist|"
    r"database .* does not exist|no pg_hba\.conf entry|permission denied for database|"
    r"must be superuser or replication role|is not permitted to log in",
    re.I,
)


def connect(dsn: str, *, timeout_s: int = 5) -> psycopg2.extensions.connection:
    """Connect, turning failures into errors without the password.

    Raises:
        SourceConfigError: the server refused (credentials, database, pg_hba): terminal.
        SourceUnavailable: it could not be reached (down, restarting, network): transient.
    """
    try:
        conn = psycopg2.connect(dsn, connect_timeout=timeout_s)
    except psycopg2.OperationalError as exc:
        reason = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        if _REFUSED.search(str(exc)):
            raise SourceConfigError(
                f"Postgres at `{mask(dsn)}` refused the connection: {reason}",
                hint="fix the user, password or database name in the source's dsn "
                "(or the server's pg_hba.conf)",
            ) from exc
        raise SourceUnavailable(
            f"cannot connect to Postgres at `{mask(dsn)}`: {reason}",
            hint="check host and port, and that the server is running",
        ) from exc
    conn.autocommit = True
    return conn


def _split(table: str) -> tuple[str, str]:
    try:
        return split_table(table)
    except ValueError as exc:
        raise SourceConfigError(
            f"table `{table}`: {exc}",
            hint='write tables as `public.customers` or `"Sales"."Order Items"`',
        ) from None


def _one(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The one row a catalog query always answers."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row from `{cur.query!r}`")
    return row


def _check_server(cur: psycopg2.extensions.cursor) -> int:
    cur.execute("SELECT current_setting('wal_level'), current_setting('server_version_num')::int")
    wal_level, version = _one(cur)
    if wal_level != "logical":
        raise SourceConfigError(
            f"the server runs with wal_level `{wal_level}`, logical decoding needs `logical`",
            hint="ALTER SYSTEM SET wal_level = logical; then restart Postgres",
        )
    return int(version)


def _check_rights(cur: psycopg2.extensions.cursor) -> None:
    cur.execute(
        "SELECT rolname, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
    )
    user, superuser, replication = _one(cur)
    if not (superuser or replication):
        raise SourceConfigError(
            f"role `{user}` has no REPLICATION right, needed to read the change stream",
            hint=f'run as a superuser: ALTER ROLE "{user}" WITH REPLICATION;',
        )


def _check_keys(cur: psycopg2.extensions.cursor, table: str, keys: Sequence[str]) -> None:
    """A `keys` override must name columns the table has."""
    schema, name = _split(table)
    cur.execute(
        """SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (schema, name),
    )
    columns = [r[0] for r in cur.fetchall()]
    missing = [k for k in keys if k not in columns]
    if missing:
        raise SourceConfigError(
            f"`keys` of `{table}` names {', '.join(f'`{k}`' for k in missing)}, which "
            f"`{table}` does not have",
            hint=f"sources[].keys.{table} must list columns of the table: {', '.join(columns)}",
        )


def _check_table(cur: psycopg2.extensions.cursor, table: str, version: int) -> TableShape:
    schema, name = _split(table)

    def fetch(query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur.execute(query, params)
        return list(cur.fetchall())

    shape = describe(fetch, schema, name)
    if shape is None:
        raise SourceConfigError(
            f"table `{table}` does not exist in this database",
            hint="check the name in `sources[].tables` (schema.table; quote names with "
            'spaces or dots: "Sales"."Order Items")',
        )
    problems = shape.problems(version)
    if problems:
        message, hint = problems[0]
        raise SourceConfigError(message, hint=hint)
    return shape


def table_shapes(dsn: str, tables: Sequence[str]) -> dict[str, TableShape]:
    """Each table's shape (its key by replica identity, see `tables.py`), by config name.

    Raises:
        SourceUnavailable: the server cannot be reached.
        SourceConfigError: a table is missing or cannot be captured exactly.
    """
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            version = _check_server(cur)
            return {table: _check_table(cur, table, version) for table in tables}
    finally:
        conn.close()


def _ensure_publication(
    cur: psycopg2.extensions.cursor, publication: str, tables: Sequence[str]
) -> tuple[bool, tuple[str, ...]]:
    targets = sql.SQL(", ").join(sql.Identifier(*_split(t)) for t in tables)
    cur.execute(
        "SELECT puballtables, pubviaroot FROM pg_publication WHERE pubname = %s", (publication,)
    )
    row = cur.fetchone()
    try:
        if row is None:
            # A partitioned table's changes are published as its own, not its partitions'.
            cur.execute(
                sql.SQL(
                    "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)"
                ).format(sql.Identifier(publication), targets)
            )
            log.info("created publication %s for %s", publication, ", ".join(tables))
            return True, tuple(tables)
        if not row[1] and _partitioned(cur, tables):
            cur.execute(
                sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(
                    sql.Identifier(publication)
                )
            )
            log.info("publication %s now publishes partitions as their parent", publication)
        if row[0]:
            return False, ()
        cur.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            (publication,),
        )
        present = {(r[0], r[1]) for r in cur.fetchall()}
        missing = [t for t in tables if _split(t) not in present]
        if missing:
            cur.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(publication),
                    sql.SQL(", ").join(sql.Identifier(*_split(t)) for t in missing),
                )
            )
            log.info("added %s to publication %s", ", ".join(missing), publication)
        return False, tuple(missing)
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise SourceConfigError(
            f"cannot create or alter publication `{publication}`: {(exc.pgerror or '').strip()}",
            hint=(
                "the capture role must own the tables (or be superuser); or create it once as "
                f"an owner: CREATE PUBLICATION {publication} FOR TABLE {', '.join(tables)};"
            ),
        ) from exc


def _partitioned(cur: psycopg2.extensions.cursor, tables: Sequence[str]) -> list[str]:
    """The partitioned tables among `tables` (config names)."""
    found = []
    for table in tables:
        schema, name = _split(table)
        cur.execute(
            """SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'p' AND n.nspname = %s AND c.relname = %s""",
            (schema, name),
        )
        if cur.fetchone() is not None:
            found.append(table)
    return found


def _check_slot(cur: psycopg2.extensions.cursor, slot: str) -> bool:
    cur.execute(
        "SELECT plugin, database, active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    row = cur.fetchone()
    if row is None:
        return False
    plugin, database, _active = row
    cur.execute("SELECT current_database()")
    here = _one(cur)[0]
    if plugin != "pgoutput" or database != here:
        raise SourceConfigError(
            f"replication slot `{slot}` exists for plugin `{plugin}` in database `{database}`",
            hint=f"drop it (SELECT pg_drop_replication_slot('{slot}');) or pick another pipeline",
        )
    return True


def ensure_signal_table(cur: psycopg2.extensions.cursor, table: str) -> None:
    """Create Debezium's signal table (id, type, data), and its schema, when missing.

    Only what is missing is created: creating even an existing schema needs the right to
    create schemas in the database, which `tidemark setup` may have used instead.

    Raises:
        SourceConfigError: the role may not create the schema or the table.
    """
    schema, name = _split(table)
    cur.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, name).as_string(cur),)
    )
    exists = cur.fetchone()
    if exists is not None and exists[0]:
        return
    try:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id varchar(64) PRIMARY KEY, "
                "type varchar(32) NOT NULL, data varchar(4096))"
            ).format(sql.Identifier(schema, name))
        )
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise SourceConfigError(
            f"cannot create Tidemark's signal table `{table}`: {(exc.pgerror or str(exc)).strip()}",
            hint="run `tidemark setup --config FILE` (it shows and applies what a source needs)",
        ) from exc


def prepare_source(
    dsn: str,
    *,
    tables: Sequence[str],
    slot: str,
    publication: str,
    signal_table: str | None = None,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> SourceReport:
    """Check rights and tables, then create or extend the publication, and tell the DDL
    capture (when installed) which tables this publication's pipeline captures.

    Raises:
        SourceUnavailable: the server cannot be reached.
        SourceConfigError: wrong credentials, wal_level, rights, a missing table, a `keys`
            override naming a missing column, a table without key and without
            `REPLICA IDENTITY FULL`, or a foreign slot of the same name.
    """
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            version = _check_server(cur)
            _check_rights(cur)
            shapes = [_check_table(cur, table, version) for table in tables]
            for table, columns in (keys or {}).items():
                _check_keys(cur, table, columns)
            # The user's tables first: a publication the role cannot extend is the error to
            # show, before anything about Tidemark's own signal table.
            created, added = _ensure_publication(cur, publication, list(tables))
            if signal_table:
                ensure_signal_table(cur, signal_table)
                _ensure_publication(cur, publication, [signal_table])
            if version >= PUBLISHES_GENERATED and any(s.generated for s in shapes):
                # Postgres 18 sends stored generated columns when the publication says so.
                cur.execute(
                    sql.SQL("ALTER PUBLICATION {} SET (publish_generated_columns = stored)").format(
                        sql.Identifier(publication)
                    )
                )
            _register(cur, publication, [_split(t) for t in tables])
            slot_exists = _check_slot(cur, slot)
    finally:
        conn.close()
    return SourceReport(version, tuple(tables), created, added, slot_exists)


def _register(
    cur: psycopg2.extensions.cursor, publication: str, tables: Sequence[tuple[str, str]]
) -> None:
    try:
        if not objects.register(cur, publication, tables):
            log.info("DDL capture is not installed: schema changes come only with the rows")
    except psycopg2.errors.InsufficientPrivilege as exc:
        reason = (exc.pgerror or "").strip()
        raise SourceConfigError(
            f"cannot register the captured tables with the DDL capture: {reason}",
            hint="run `tidemark setup --config FILE`: it grants the capture role what it needs",
        ) from exc


def drop_slot(dsn: str, slot: str) -> bool:
    """Drop a replication slot (when a pipeline is removed); False if it did not exist."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            return cur.rowcount > 0
    finally:
        conn.close()

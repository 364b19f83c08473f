"""What Tidemark installs in a Postgres source, and how to tell whether it is there.

Everything lives in a schema of Tidemark's own, `_tidemark` (not `tidemark`: a role of that
name would create its own tables there by default, `search_path` starting with `"$user"`):
the DDL capture (`ddl_capture.sql`: state tables, functions, three event triggers) and the
list of captured tables the triggers consult. `tidemark setup` shows the statements and
applies them (`setup_statements`); `tidemark run` refuses to start without them
(`ddl_capture_missing`) unless the source opts out (`ddl_capture: false`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

log = logging.getLogger(__name__)

SCHEMA = "_tidemark"
VERSION = "tidemark ddl capture 2"
TRIGGERS = ("tidemark_ddl_end", "tidemark_ddl_start", "tidemark_drop")


@dataclass(frozen=True)
class Statement:
    """One step of the setup: what it is for, and its SQL."""

    purpose: str
    sql: str
    superuser: bool = False


def capture_sql() -> str:
    """The DDL capture's SQL (idempotent: running it again upgrades in place)."""
    return resources.files("tidemark.connectors.postgres").joinpath("ddl_capture.sql").read_text()


def grant_sql(cur: Cursor, role: str) -> str:
    """What the capture role needs to register its tables and read the captured list."""
    return (
        sql.SQL(
            "GRANT USAGE ON SCHEMA {schema} TO {role};\n"
            "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};\n"
            "GRANT EXECUTE ON FUNCTION {schema}.register(text, text[], text[]) TO {role};"
        )
        .format(schema=sql.Identifier(SCHEMA), role=sql.Identifier(role))
        .as_string(cur)
    )


def publication_sql(
    cur: Cursor, publication: str, tables: Sequence[tuple[str, str]], *, exists: bool
) -> str:
    """Create the publication for `tables` ((schema, table) pairs), or set the option on an
    existing one: a partitioned table's changes are published as its own."""
    if not exists:
        targets = sql.SQL(", ").join(sql.Identifier(*t) for t in tables)
        statement = sql.SQL(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true);"
        ).format(sql.Identifier(publication), targets)
    else:
        statement = sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true);").format(
            sql.Identifier(publication)
        )
    return statement.as_string(cur)


def register_sql(cur: Cursor, publication: str, tables: Sequence[tuple[str, str]]) -> str:
    """Tell the triggers which tables ((schema, table) pairs) this publication captures."""
    return (
        sql.SQL("SELECT {}.register({}, {}::text[], {}::text[]);")
        .format(
            sql.Identifier(SCHEMA),
            sql.Literal(publication),
            sql.Literal([schema for schema, _ in tables]),
            sql.Literal([name for _, name in tables]),
        )
        .as_string(cur)
    )


def ddl_capture_missing(cur: psycopg2.extensions.cursor) -> list[str]:
    """What of the DDL capture is missing in the connected database (empty: all there)."""
    cur.execute(
        "SELECT obj_description(n.oid, 'pg_namespace') FROM pg_namespace n WHERE nspname = %s",
        (SCHEMA,),
    )
    row = cur.fetchone()
    if row is None:
        return [f"schema `{SCHEMA}` with Tidemark's DDL capture"]
    missing = []
    if row[0] != VERSION:
        missing.append(f"the current DDL capture (found `{row[0]}`, need `{VERSION}`)")
    cur.execute(
        "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname = ANY(%s)",
        (list(TRIGGERS),),
    )
    found = dict(cur.fetchall())
    for name in TRIGGERS:
        if name not in found:
            missing.append(f"event trigger `{name}`")
        elif found[name] == "D":
            missing.append(f"event trigger `{name}` is disabled")
    return missing


def register(
    cur: psycopg2.extensions.cursor, publication: str, tables: Sequence[tuple[str, str]]
) -> bool:
    """Register the captured tables ((schema, table) pairs) with the triggers; False when
    the capture is absent."""
    if ddl_capture_missing(cur):
        return False
    cur.execute(register_sql(cur, publication, tables))
    return True


def setup_statements(
    cur: psycopg2.extensions.cursor,
    *,
    role: str,
    publication: str,
    tables: Sequence[tuple[str, str]],
    signal_table: tuple[str, str] | None,
) -> list[Statement]:
    """Everything the source needs for one pipeline source, as statements to show and run.

    Tables are (schema, table) pairs; `signal_table` is created if missing and published
    with the tables.
    """
    out = [Statement("Tidemark's DDL capture (schema, state, event triggers)", capture_sql(), True)]
    out.append(Statement(f"rights of the capture role `{role}`", grant_sql(cur, role), True))
    if signal_table:
        schema, name = signal_table
        out.append(
            Statement(
                "the signal table (incremental snapshots of added tables and partitions)",
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {table} (id varchar(64) PRIMARY KEY, "
                    "type varchar(32) NOT NULL, data varchar(4096));\n"
                    # Debezium writes its snapshot windows into it as the capture role
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role};"
                )
                .format(table=sql.Identifier(schema, name), role=sql.Identifier(role))
                .as_string(cur),
            )
        )
    published = [*tables, *([signal_table] if signal_table else [])]
    cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
    exists = cur.fetchone() is not None
    out.append(
        Statement(
            f"publication `{publication}` (partitions published as their parent)",
            publication_sql(cur, publication, published, exists=exists),
        )
    )
    if exists:
        cur.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            (publication,),
        )
        present = {(r[0], r[1]) for r in cur.fetchall()}
        missing = [t for t in published if t not in present]
        if missing:
            out.append(
                Statement(
                    "add the missing tables to the publication",
                    sql.SQL("ALTER PUBLICATION {} ADD TABLE {};")
                    .format(
                        sql.Identifier(publication),
                        sql.SQL(", ").join(sql.Identifier(*t) for t in missing),
                    )
                    .as_string(cur),
                )
            )
    out.append(
        Statement("the captured tables, for the triggers", register_sql(cur, publication, tables))
    )
    return out

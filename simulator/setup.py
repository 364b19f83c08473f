"""Create a profile's schema (idempotent) and read the key ranges a run starts from."""

from __future__ import annotations

import logging
from typing import Any

from tidemark.simulator.dialects import Dialect
from tidemark.simulator.errors import SimulatorConfigError, first_line
from tidemark.simulator.profiles.base import Profile

log = logging.getLogger(__name__)


def schema_statements(dialect: Dialect, profile: Profile) -> list[str]:
    """Every DDL statement `setup` runs, parents first (also what the T-SQL check parses)."""
    return [sql for table in profile.tables for sql in dialect.ddl(table)]


def create_schema(conn: Any, dialect: Dialect, profile: Profile) -> None:
    """Create tables and indexes when missing, then insert absent reference rows.

    Running it again changes nothing: DDL is guarded (IF NOT EXISTS / OBJECT_ID), and
    reference rows are inserted only into empty tables, with insert-if-absent on their
    unique column in case two setups race.
    """
    cur = conn.cursor()
    for sql in schema_statements(dialect, profile):
        cur.execute(sql)
    conn.commit()
    for name, (unique, cols, rows) in profile.reference().items():
        cur.execute(f"SELECT COUNT(*) FROM {dialect.qualified(name)}")
        if cur.fetchone()[0]:
            continue
        table = profile.table(name)
        for start in range(0, len(rows), 100):
            chunk = rows[start : start + 100]
            cur.execute(
                dialect.seed_sql(table, cols, len(chunk), unique), [v for row in chunk for v in row]
            )
        log.info("seeded %d rows into %s", len(rows), name)
    conn.commit()
    for table in profile.tables:
        check_columns(cur, dialect, profile, table.name)
    conn.rollback()


def key_ranges(conn: Any, dialect: Dialect, profile: Profile) -> dict[str, tuple[Any, Any]]:
    """`{table: (min id, max id)}`; a clear error when the schema was never set up."""
    cur = conn.cursor()
    ranges = {}
    for table in profile.tables:
        try:
            cur.execute(dialect.key_range_sql(table.name))
        except Exception as exc:
            conn.rollback()
            if "does not exist" in str(exc) or "Invalid object name" in str(exc):
                raise SimulatorConfigError(
                    f"table `{dialect.qualified(table.name)}` of profile `{profile.name}` "
                    "does not exist",
                    hint="run once with --setup to create the schema",
                ) from None
            if dialect.classify(exc) == "database":
                raise SimulatorConfigError(
                    f"cannot read table `{dialect.qualified(table.name)}`: `{first_line(exc)}`",
                    hint="the user needs SELECT, INSERT, UPDATE and DELETE on the profile's tables",
                ) from exc
            raise
        ranges[table.name] = cur.fetchone()
        check_columns(cur, dialect, profile, table.name)
    conn.rollback()
    return ranges


def check_columns(cur: Any, dialect: Dialect, profile: Profile, name: str) -> None:
    """Fail clearly when a table of the same name belongs to another profile."""
    cur.execute(f"SELECT * FROM {dialect.qualified(name)} WHERE 1 = 0")
    found = {d[0].lower() for d in cur.description}
    missing = [c.name for c in profile.table(name).columns if c.name not in found]
    if missing:
        raise SimulatorConfigError(
            f"table `{dialect.qualified(name)}` exists but lacks column(s) "
            f"`{', '.join(missing)}` of profile `{profile.name}`",
            hint="each profile needs its own database (another profile created this table)",
        )

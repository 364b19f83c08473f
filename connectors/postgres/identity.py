"""Which database a Postgres source is, and where its replication slot stands.

Start-up reconciliation (`tidemark/startup.py`) compares these facts with what the lake
remembers of the source: a different system identifier is another cluster (its LSNs start
over, so the lake's positions mean nothing there), a different database OID is a database
dropped and made again, and a slot that is gone, or confirmed beyond what the lake holds,
can no longer give the lake the changes it misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2
import psycopg2.extras

from tidemark.connectors.errors import SourceUnavailable
from tidemark.connectors.postgres.setup import connect
from tidemark.connectors.postgres.snapshot import parse_lsn
from tidemark.kernel.secrets import mask


@dataclass(frozen=True)
class SlotState:
    """A replication slot as `pg_replication_slots` shows it.

    Attributes:
        confirmed_lsn: what its consumer confirmed: Postgres never streams anything that
            committed before it again.
        active_pid: the backend streaming from it now (another consumer), or None.
    """

    name: str
    plugin: str
    database: str
    confirmed_lsn: int | None
    active_pid: int | None


@dataclass(frozen=True)
class SourceIdentity:
    """The database behind a source.

    Attributes:
        system_id: the cluster's system identifier (`IDENTIFY_SYSTEM`): a new cluster (initdb,
            pg_upgrade, a restore into a new server) has a new one.
        database: the database name.
        database_oid: its OID: a database dropped and created again has a new one.
        wal_lsn: the current WAL position.
    """

    system_id: str
    database: str
    database_oid: int
    wal_lsn: int

    def as_record(self) -> dict[str, object]:
        return {"system_id": self.system_id, "database": self.database, "oid": self.database_oid}


def source_identity(dsn: str) -> SourceIdentity:
    """The source's system identifier, database and WAL position.

    Raises:
        SourceConfigError: the server refused the role (password, database, pg_hba): terminal.
        SourceUnavailable: the server cannot be reached or refuses a replication connection.
    """
    sql = connect(dsn)  # a refusal (password, role, database) is terminal, named with its fix
    try:
        with sql.cursor() as cur:
            cur.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            row = cur.fetchone()
            if row is None:
                raise SourceUnavailable(f"the current database has no oid on `{mask(dsn)}`")
            oid = int(row[0])
    finally:
        sql.close()
    try:
        conn = psycopg2.connect(
            dsn,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            connect_timeout=5,
        )
    except psycopg2.Error as exc:
        reason = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise SourceUnavailable(
            f"cannot open a replication connection to `{mask(dsn)}`: {reason}",
            hint="check that the server runs and the role has REPLICATION",
        ) from exc
    try:
        cursor = conn.cursor()
        cursor.execute("IDENTIFY_SYSTEM")
        identified = cursor.fetchone()
        if identified is None:
            raise SourceUnavailable(f"IDENTIFY_SYSTEM returned nothing on `{mask(dsn)}`")
        system_id, _timeline, xlogpos, dbname = identified
    finally:
        conn.close()
    return SourceIdentity(str(system_id), str(dbname), oid, parse_lsn(str(xlogpos)))


def slot_state(dsn: str, slot: str) -> SlotState | None:
    """The slot's state, or None when it does not exist."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT plugin, database, (confirmed_flush_lsn - '0/0')::bigint, active_pid "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    plugin, database, confirmed, pid = row
    return SlotState(slot, str(plugin), str(database), confirmed, pid)


def drop_slot_when_free(dsn: str, slot: str, *, tries: int = 50) -> bool:
    """Drop a slot once no walsender holds it (a consumer just closed may hold it briefly).

    Returns False when it did not exist. Raises `psycopg2.errors.ObjectInUse` when a
    consumer still streams from it after `tries` attempts.
    """
    import time

    from tidemark.connectors.postgres.setup import drop_slot

    for attempt in range(tries):
        try:
            return drop_slot(dsn, slot)
        except psycopg2.errors.ObjectInUse:
            if attempt == tries - 1:
                raise
            time.sleep(0.1)
    return False


def primary_keys(dsn: str, tables: list[str]) -> dict[str, tuple[str, ...]]:
    """`schema.table` -> its primary key columns, in order (tables without one are left out)."""
    conn = connect(dsn)
    out: dict[str, tuple[str, ...]] = {}
    try:
        with conn.cursor() as cur:
            for table in tables:
                schema, name = table.split(".", 1)
                cur.execute(
                    """SELECT a.attname
                       FROM pg_index i
                       JOIN pg_class c ON c.oid = i.indrelid
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                       JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord) ON true
                       JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num
                       WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
                       ORDER BY k.ord""",
                    (schema, name),
                )
                columns = tuple(str(r[0]) for r in cur.fetchall())
                if columns:
                    out[table] = columns
    finally:
        conn.close()
    return out

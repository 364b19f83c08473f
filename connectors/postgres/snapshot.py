"""A source snapshot whose exact WAL position is known: what `tidemark verify` compares at.

A temporary logical replication slot created with `USE_SNAPSHOT` inside a REPEATABLE READ
transaction gives both: the transaction sees exactly the transactions that committed before
the slot's consistent point, and that point is an LSN the lake can be compared against.
The slot disappears with the connection, so it never holds WAL.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras

from tidemark.connectors.errors import SourceUnavailable
from tidemark.kernel.secrets import mask

logger = logging.getLogger(__name__)


def parse_lsn(text: str) -> int:
    """`16/B374D848` -> int."""
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(value: int) -> str:
    """int -> `16/B374D848`."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass
class Snapshot:
    """An open snapshot: run queries in it while the context is open.

    Attributes:
        lsn: the consistent point; the snapshot holds exactly the transactions whose commit
            record lies before it.
        xmin, xmax, xip: the snapshot's visibility (32-bit xids, as Debezium's `txId`): a
            committed xid is visible iff `xid < xmin`, or `xid < xmax` and not in `xip`.
    """

    lsn: int
    cursor: Any
    xmin: int = 0
    xmax: int = 0
    xip: tuple[int, ...] = ()

    def visible_sql(self, tx_column: str) -> str:
        """A SQL predicate (Postgres and DuckDB) true when `tx_column` is visible here."""
        xid = f"CAST({tx_column} AS BIGINT)"
        running = f" AND {xid} NOT IN ({', '.join(map(str, self.xip))})" if self.xip else ""
        return f"({xid} < {self.xmin} OR ({xid} < {self.xmax}{running}))"

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(sql, params)
        return list(self.cursor.fetchall())

    def copy_to(self, sql: str, path: str) -> None:
        """`COPY (sql) TO STDOUT (FORMAT csv)` into a file."""
        with open(path, "w", encoding="utf-8", newline="") as handle:
            self.cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", handle)


@contextmanager
def consistent_snapshot(dsn: str) -> Iterator[Snapshot]:
    """Open a REPEATABLE READ snapshot at a known LSN.

    Raises:
        SourceUnavailable: the database cannot be reached or refuses replication.
    """
    slot = f"tidemark_verify_{secrets.token_hex(4)}"
    try:
        conn = psycopg2.connect(
            dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
        )
    except psycopg2.Error as exc:
        raise SourceUnavailable(
            f"cannot open a replication connection to `{mask(dsn)}`: {str(exc).strip()}",
            hint="the user needs REPLICATION (or superuser) and wal_level=logical",
        ) from exc
    try:
        cursor = conn.cursor()
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute(f"CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput USE_SNAPSHOT")
        created = cursor.fetchone()
        assert created is not None  # CREATE_REPLICATION_SLOT answers one row
        lsn = parse_lsn(created[1])
        cursor.execute("SET LOCAL TimeZone = 'UTC'")
        cursor.execute("SET LOCAL DateStyle = 'ISO'")
        cursor.execute("SET LOCAL extra_float_digits = 1")
        cursor.execute("SELECT pg_current_snapshot()::text")
        current = cursor.fetchone()
        assert current is not None
        xmin, xmax, xip = current[0].split(":")
        running = tuple(int(x) % 2**32 for x in xip.split(",") if x)
        logger.info("verify snapshot at %s (xmin %s, xmax %s)", format_lsn(lsn), xmin, xmax)
        yield Snapshot(lsn, cursor, int(xmin) % 2**32, int(xmax) % 2**32, running)
        cursor.execute("ROLLBACK")
    except psycopg2.OperationalError as exc:
        raise SourceUnavailable(
            f"the source connection failed during verify: {str(exc).strip()}",
            hint="check the source is up and retry",
        ) from exc
    finally:
        conn.close()

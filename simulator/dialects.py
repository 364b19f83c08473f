"""The few places where Postgres and SQL Server differ, behind one small interface.

The simulator's operations are written once against `Dialect`: it renders DDL from the
neutral `schema.Table`, the handful of statement shapes the operations need (multi-row insert
returning keys, update from a VALUES list, delete returning rows, row locks, child counts,
insert-if-absent for reference data), placeholders, and tells retryable conflicts
(serialization failure, deadlock, a lost foreign-key race) from real failures.

The SQL text comes from pure methods so tests can check the T-SQL without a SQL Server
(they parse it with sqlglot's `tsql` dialect).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Any, ClassVar, Literal

from tidemark.simulator.schema import Column, Table

LockMode = Literal["share", "update"]
# retry: conflict, run the transaction again; connection: link lost, reconnect;
# database: the server refused (rights, read-only, disk full); other: not a database error
ErrorKind = Literal["retry", "connection", "database", "other"]


class Dialect(ABC):
    """SQL rendering for one database family."""

    name: Literal["postgres", "sqlserver"]
    schema: str
    param: str

    # -- names and types --------------------------------------------------------------------
    def qualified(self, table: str) -> str:
        return f"{self.schema}.{table}"

    @abstractmethod
    def column_type(self, col: Column) -> str: ...

    @property
    @abstractmethod
    def now(self) -> str:
        """The SQL expression for the current timestamp (for `modified_at`)."""

    def _params(self, n: int) -> str:
        return ", ".join([self.param] * n)

    def _rows(self, n_cols: int, n_rows: int, cell: str | None = None) -> str:
        row = f"({cell or self._params(n_cols)})"
        return ", ".join([row] * n_rows)

    # -- DDL ----------------------------------------------------------------------------------
    def _column_ddl(self, table: Table, col: Column) -> str:
        parts = [col.name, self.column_type(col)]
        if col.type == "key":
            parts.append(self.identity_clause)
        else:
            parts.append("NULL" if col.nullable else "NOT NULL")
        if col.default_now:
            parts.append(f"DEFAULT {self.now}")
        return " ".join(parts)

    def _constraints(self, table: Table) -> list[str]:
        out = []
        for col in table.columns:
            if col.type == "ref":
                out.append(
                    f"CONSTRAINT fk_{table.name}_{col.name} FOREIGN KEY ({col.name}) "
                    f"REFERENCES {self.qualified(col.references or '')} (id)"
                )
            if col.choices:
                values = ", ".join(f"'{v}'" for v in col.choices)
                out.append(
                    f"CONSTRAINT ck_{table.name}_{col.name} CHECK ({col.name} IN ({values}))"
                )
        out.extend(f"CONSTRAINT uq_{table.name}_{c} UNIQUE ({c})" for c in table.unique)
        return out

    def create_table_sql(self, table: Table) -> str:
        body = ",\n  ".join(
            [self._column_ddl(table, c) for c in table.columns] + self._constraints(table)
        )
        return f"CREATE TABLE {self.qualified(table.name)} (\n  {body}\n)"

    @property
    @abstractmethod
    def identity_clause(self) -> str: ...

    @abstractmethod
    def ddl(self, table: Table) -> list[str]:
        """Idempotent statements that create `table` and an index per foreign key."""

    # -- DML ------------------------------------------------------------------------------------
    @abstractmethod
    def insert_sql(self, table: str, cols: tuple[str, ...], n_rows: int) -> str:
        """Insert `n_rows` rows; the result set is the new `id`s."""

    @abstractmethod
    def insert_children_sql(
        self,
        table: Table,
        cols: tuple[str, ...],
        n_rows: int,
        *,
        fk: str,
        parent: str,
        returning: tuple[str, ...] = (),
        parent_not: str | None = None,
    ) -> str:
        """Insert child rows only where their parent (`fk` -> `parent.id`) still exists, and
        key-share lock that parent (one round trip instead of lock-then-insert).

        Parameters: `n_rows` rows of `cols`, then the value `parent_not` must differ from
        (when given). Returns `id, *returning` of the inserted rows.
        """

    @abstractmethod
    def update_sql(
        self, table: Table, set_cols: tuple[str, ...], add_cols: tuple[str, ...], n_rows: int
    ) -> str:
        """Update rows from a VALUES list `(id, *set_cols, *add_cols)`; returns updated `id`s.

        `set_cols` are assigned, `add_cols` are added to the current value (balances), and
        `modified_at` is set to now.
        """

    @abstractmethod
    def delete_sql(
        self,
        table: str,
        n_ids: int,
        *,
        by: str = "id",
        returning: tuple[str, ...] = (),
        match: tuple[str, ...] = (),
    ) -> str:
        """Delete rows whose `by` column is one of `n_ids` values (and `match` columns equal
        the extra parameters); returns `id, *returning` of the deleted rows."""

    @abstractmethod
    def lock_sql(self, table: str, n_ids: int, cols: tuple[str, ...], mode: LockMode) -> str:
        """Select and lock existing rows by id (in id order); returns `id, *cols`."""

    def count_children_sql(self, child: str, fk: str, n_ids: int) -> str:
        return (
            f"SELECT {fk}, COUNT(*) FROM {self.qualified(child)} "
            f"WHERE {fk} IN ({self._params(n_ids)}) GROUP BY {fk}"
        )

    @abstractmethod
    def seed_sql(self, table: Table, cols: tuple[str, ...], n_rows: int, unique: str) -> str:
        """Insert rows unless a row with the same `unique` value exists (reference data)."""

    def key_range_sql(self, table: str) -> str:
        return f"SELECT MIN(id), MAX(id) FROM {self.qualified(table)}"

    @abstractmethod
    def tx_info_sql(self) -> str:
        """Inside a transaction: its id and the current clock (for the ledger)."""

    # Prefixed to a transaction's first statement. Postgres workers run in autocommit mode
    # and open transactions themselves, saving the separate BEGIN round trip psycopg2 makes.
    begin_prefix: str = ""

    def worker_session(self, conn: Any) -> None:  # noqa: B027 - optional hook
        """Per-connection settings for a load generator (best effort); none by default."""

    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def run_alone(self, conn: Any, sql: str, params: tuple[Any, ...]) -> Any:
        """One read outside any transaction (between simulated transactions)."""
        cur = conn.cursor()
        cur.execute(sql, params)
        row = cur.fetchone()
        conn.rollback()
        return row

    def commit_time_sql(self, conn: Any) -> str | None:
        """A query for the exact commit time of a transaction id, when the server keeps it."""
        return None

    @abstractmethod
    def classify(self, exc: BaseException) -> ErrorKind:
        """`retry` for serialization/deadlock/FK races, `connection` for a lost link."""


class PostgresDialect(Dialect):
    """PostgreSQL (psycopg2): identity keys, RETURNING, `FOR UPDATE`, `ON CONFLICT`."""

    name = "postgres"
    schema = "public"
    param = "%s"
    identity_clause = "GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    _TYPES: ClassVar[dict[str, str]] = {
        "key": "bigint",
        "ref": "bigint",
        "money": "numeric(18,2)",
        "rate": "numeric(7,4)",
        "int": "integer",
        "bool": "boolean",
        "date": "date",
        "ts": "timestamptz",
    }
    # 40001 serialization_failure, 40P01 deadlock_detected, 23503 foreign_key_violation
    # (a parent deleted by a concurrent transaction), 55P03 lock_not_available.
    RETRYABLE = frozenset({"40001", "40P01", "23503", "55P03"})

    @property
    def now(self) -> str:
        return "now()"

    def column_type(self, col: Column) -> str:
        if col.type in ("text", "code"):
            return "text"
        return self._TYPES[col.type]

    def ddl(self, table: Table) -> list[str]:
        create = self.create_table_sql(table)
        statements = [create.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)]
        for col in table.references:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS ix_{table.name}_{col.name} "
                f"ON {self.qualified(table.name)} ({col.name})"
            )
        return statements

    @lru_cache(maxsize=512)  # noqa: B019 - dialects are module-level singletons
    def insert_sql(self, table: str, cols: tuple[str, ...], n_rows: int) -> str:
        return (
            f"INSERT INTO {self.qualified(table)} ({', '.join(cols)}) "
            f"VALUES {self._rows(len(cols), n_rows)} RETURNING id"
        )

    @lru_cache(maxsize=512)  # noqa: B019
    def insert_children_sql(
        self,
        table: Table,
        cols: tuple[str, ...],
        n_rows: int,
        *,
        fk: str,
        parent: str,
        returning: tuple[str, ...] = (),
        parent_not: str | None = None,
    ) -> str:
        cell = ", ".join(f"%s::{self.column_type(table.column(c))}" for c in cols)
        where = f" WHERE p.{parent_not} <> %s" if parent_not else ""
        return (
            f"INSERT INTO {self.qualified(table.name)} ({', '.join(cols)}) "
            f"SELECT {', '.join(f'v.{c}' for c in cols)} "
            f"FROM (VALUES {self._rows(len(cols), n_rows, cell)}) AS v({', '.join(cols)}) "
            f"JOIN {self.qualified(parent)} AS p ON p.id = v.{fk}{where} FOR KEY SHARE OF p "
            f"RETURNING {', '.join(('id', *returning))}"
        )

    @lru_cache(maxsize=512)  # noqa: B019
    def update_sql(
        self, table: Table, set_cols: tuple[str, ...], add_cols: tuple[str, ...], n_rows: int
    ) -> str:
        cols = ("id", *set_cols, *add_cols)
        cell = ", ".join(f"%s::{self.column_type(table.column(c))}" for c in cols)
        sets = [f"{c} = v.{c}" for c in set_cols] + [f"{c} = t.{c} + v.{c}" for c in add_cols]
        sets.append(f"modified_at = {self.now}")
        return (
            f"UPDATE {self.qualified(table.name)} AS t SET {', '.join(sets)} "
            f"FROM (VALUES {self._rows(len(cols), n_rows, cell)}) AS v({', '.join(cols)}) "
            f"WHERE t.id = v.id RETURNING t.id"
        )

    @lru_cache(maxsize=512)  # noqa: B019
    def delete_sql(
        self,
        table: str,
        n_ids: int,
        *,
        by: str = "id",
        returning: tuple[str, ...] = (),
        match: tuple[str, ...] = (),
    ) -> str:
        where = " AND ".join([f"{by} IN ({self._params(n_ids)})", *(f"{c} = %s" for c in match)])
        return (
            f"DELETE FROM {self.qualified(table)} WHERE {where} "
            f"RETURNING {', '.join(('id', *returning))}"
        )

    @lru_cache(maxsize=512)  # noqa: B019
    def lock_sql(self, table: str, n_ids: int, cols: tuple[str, ...], mode: LockMode) -> str:
        lock = "FOR UPDATE" if mode == "update" else "FOR KEY SHARE"
        return (
            f"SELECT {', '.join(('id', *cols))} FROM {self.qualified(table)} "
            f"WHERE id IN ({self._params(n_ids)}) ORDER BY id {lock}"
        )

    def seed_sql(self, table: Table, cols: tuple[str, ...], n_rows: int, unique: str) -> str:
        return (
            f"INSERT INTO {self.qualified(table.name)} ({', '.join(cols)}) "
            f"VALUES {self._rows(len(cols), n_rows)} ON CONFLICT ({unique}) DO NOTHING"
        )

    begin_prefix = "BEGIN; "

    def worker_session(self, conn: Any) -> None:
        # Deadlocks among concurrent workers are expected and retried; detecting them after
        # 100 ms instead of the default 1 s keeps throughput up. Needs superuser (the local
        # cluster's user is one); elsewhere the server default stays.
        import psycopg2

        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SET deadlock_timeout = '100ms'")
        except psycopg2.Error:
            pass

    def commit(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute("ROLLBACK")  # a warning, not an error, when no transaction is open

    def run_alone(self, conn: Any, sql: str, params: tuple[Any, ...]) -> Any:
        with conn.cursor() as cur:  # autocommit: the statement is its own transaction
            cur.execute(sql, params)
            return cur.fetchone()

    def commit_time_sql(self, conn: Any) -> str | None:
        # With track_commit_timestamp=on Postgres records each commit's time: the same
        # instant Debezium reports as the source timestamp.
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('track_commit_timestamp')")
            on = cur.fetchone()[0] == "on"
        conn.rollback()
        return "SELECT pg_xact_commit_timestamp(%s::text::xid)" if on else None

    def tx_info_sql(self) -> str:
        # pg_current_xact_id() is the 64-bit id (xid8); ::xid is what pgoutput/Debezium
        # report as txId. clock_timestamp(), unlike now(), is the time of this statement.
        return "SELECT pg_current_xact_id()::xid::text::bigint, clock_timestamp()"

    def classify(self, exc: BaseException) -> ErrorKind:
        import psycopg2

        code = getattr(exc, "pgcode", None)
        if code in self.RETRYABLE:
            return "retry"
        if isinstance(exc, psycopg2.InterfaceError) or (
            isinstance(exc, psycopg2.OperationalError)
            and (code is None or code.startswith("08") or code.startswith("57P"))
        ):
            return "connection"
        return "database" if isinstance(exc, psycopg2.Error) else "other"


class SqlServerDialect(Dialect):
    """SQL Server (pyodbc): IDENTITY, OUTPUT, lock hints, MERGE, `?` placeholders."""

    name = "sqlserver"
    schema = "dbo"
    param = "?"
    identity_clause = "IDENTITY(1,1) NOT NULL PRIMARY KEY"
    _TYPES: ClassVar[dict[str, str]] = {
        "key": "BIGINT",
        "ref": "BIGINT",
        "money": "DECIMAL(18,2)",
        "rate": "DECIMAL(7,4)",
        "int": "INT",
        "bool": "BIT",
        "date": "DATE",
        "ts": "DATETIMEOFFSET(6)",
    }
    # 1205 deadlock victim, 3960 snapshot update conflict, 547 FK conflict, 1222 lock timeout.
    RETRYABLE_NATIVE = ("(1205)", "(3960)", "(547)", "(1222)")

    @property
    def now(self) -> str:
        return "SYSDATETIMEOFFSET()"

    def column_type(self, col: Column) -> str:
        if col.type == "text":
            return f"NVARCHAR({col.length})"
        if col.type == "code":
            return f"VARCHAR({col.length})"
        return self._TYPES[col.type]

    def ddl(self, table: Table) -> list[str]:
        name = self.qualified(table.name)
        statements = [f"IF OBJECT_ID(N'{name}', N'U') IS NULL {self.create_table_sql(table)}"]
        for col in table.references:
            index = f"ix_{table.name}_{col.name}"
            statements.append(
                f"IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'{index}' "
                f"AND object_id = OBJECT_ID(N'{name}')) CREATE INDEX {index} ON {name} ({col.name})"
            )
        return statements

    def insert_sql(self, table: str, cols: tuple[str, ...], n_rows: int) -> str:
        return (
            f"INSERT INTO {self.qualified(table)} ({', '.join(cols)}) OUTPUT inserted.id "
            f"VALUES {self._rows(len(cols), n_rows)}"
        )

    def insert_children_sql(
        self,
        table: Table,
        cols: tuple[str, ...],
        n_rows: int,
        *,
        fk: str,
        parent: str,
        returning: tuple[str, ...] = (),
        parent_not: str | None = None,
    ) -> str:
        cell = ", ".join(f"CAST(? AS {self.column_type(table.column(c))})" for c in cols)
        output = ", ".join(f"inserted.{c}" for c in ("id", *returning))
        where = f" WHERE p.{parent_not} <> ?" if parent_not else ""
        return (
            f"INSERT INTO {self.qualified(table.name)} ({', '.join(cols)}) OUTPUT {output} "
            f"SELECT {', '.join(f'v.{c}' for c in cols)} "
            f"FROM (VALUES {self._rows(len(cols), n_rows, cell)}) AS v({', '.join(cols)}) "
            f"JOIN {self.qualified(parent)} AS p WITH (HOLDLOCK, ROWLOCK) ON p.id = v.{fk}{where}"
        )

    def update_sql(
        self, table: Table, set_cols: tuple[str, ...], add_cols: tuple[str, ...], n_rows: int
    ) -> str:
        cols = ("id", *set_cols, *add_cols)
        cell = ", ".join(f"CAST(? AS {self.column_type(table.column(c))})" for c in cols)
        sets = [f"t.{c} = v.{c}" for c in set_cols] + [f"t.{c} = t.{c} + v.{c}" for c in add_cols]
        sets.append(f"t.modified_at = {self.now}")
        return (
            f"UPDATE t SET {', '.join(sets)} OUTPUT inserted.id "
            f"FROM {self.qualified(table.name)} AS t "
            f"JOIN (VALUES {self._rows(len(cols), n_rows, cell)}) AS v({', '.join(cols)}) "
            f"ON t.id = v.id"
        )

    def delete_sql(
        self,
        table: str,
        n_ids: int,
        *,
        by: str = "id",
        returning: tuple[str, ...] = (),
        match: tuple[str, ...] = (),
    ) -> str:
        where = " AND ".join([f"{by} IN ({self._params(n_ids)})", *(f"{c} = ?" for c in match)])
        output = ", ".join(f"deleted.{c}" for c in ("id", *returning))
        return f"DELETE {self.qualified(table)} OUTPUT {output} WHERE {where}"

    def lock_sql(self, table: str, n_ids: int, cols: tuple[str, ...], mode: LockMode) -> str:
        hints = "UPDLOCK, ROWLOCK, HOLDLOCK" if mode == "update" else "HOLDLOCK, ROWLOCK"
        return (
            f"SELECT {', '.join(('id', *cols))} FROM {self.qualified(table)} WITH ({hints}) "
            f"WHERE id IN ({self._params(n_ids)}) ORDER BY id"
        )

    def seed_sql(self, table: Table, cols: tuple[str, ...], n_rows: int, unique: str) -> str:
        cell = ", ".join(f"CAST(? AS {self.column_type(table.column(c))})" for c in cols)
        names = ", ".join(cols)
        return (
            f"MERGE INTO {self.qualified(table.name)} AS t "
            f"USING (VALUES {self._rows(len(cols), n_rows, cell)}) AS s({names}) "
            f"ON t.{unique} = s.{unique} WHEN NOT MATCHED THEN INSERT ({names}) "
            f"VALUES ({', '.join(f's.{c}' for c in cols)});"
        )

    def tx_info_sql(self) -> str:
        return "SELECT CURRENT_TRANSACTION_ID(), SYSUTCDATETIME()"

    def classify(self, exc: BaseException) -> ErrorKind:
        text = str(exc)
        state = exc.args[0] if getattr(exc, "args", None) else ""
        if any(code in text for code in self.RETRYABLE_NATIVE) or state in ("40001",):
            return "retry"
        if isinstance(state, str) and state.startswith("08"):
            return "connection"
        return "database" if type(exc).__module__ == "pyodbc" else "other"


POSTGRES = PostgresDialect()
SQLSERVER = SqlServerDialect()

"""`COPY ... TO STDOUT` straight into typed Arrow: the loader's reader.

One range of one table is read by `COPY (SELECT <column expressions> FROM t WHERE <range>)
TO STDOUT (FORMAT csv)` on a connection whose transaction already uses the load's snapshot.
The server's CSV goes through an OS pipe into Arrow's streaming CSV reader (C++, outside the
GIL), so a range is never held whole in memory: it comes out as Arrow tables of about
`block_rows` rows, each typed column by column (`connectors/postgres/columns.py`) into the
decoder's Delta-storable types. A row whose value cannot be typed (a numeric NaN in
`numeric(p, s)`, a date Delta cannot hold, an array of two dimensions) becomes a dead letter
with the reason, as the decoder makes the event one; the others go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv

from tidemark.connectors.decode.rowkey import row_digests
from tidemark.connectors.decode.storable import delta_array, delta_type
from tidemark.connectors.postgres.columns import ColumnPlan
from tidemark.kernel.columns import ROW
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.names import sql_name

log = logging.getLogger(__name__)

BLOCK_BYTES = 8 << 20
"""Bytes of CSV Arrow's reader parses at a time: one block becomes one typed table."""


@dataclass
class ReadTable:
    """What reading one block produced.

    Attributes:
        rows: the typed rows (the lake's column types; `_tm_row` added for a table without
            a key).
        dead_letters: rows that could not be typed, with the reason.
        source_rows: rows the server sent (typed + dead).
    """

    rows: pa.Table
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def source_rows(self) -> int:
        return self.rows.num_rows + len(self.dead_letters)


@dataclass(frozen=True)
class TableReader:
    """Reads ranges of one table as the lake types them.

    Attributes:
        table: the lake table name (`<source>.<schema>.<table>`), for dead letters.
        schema, name: the source table.
        plans: one per column, in table order.
        key_columns: the key (empty: a table without one gets `_tm_row`, rowkey.py).
        extra: further SQL expressions selected after the columns (e.g. a tuple's `xmin`),
            returned as string columns named by their keys.
    """

    table: str
    schema: str
    name: str
    plans: tuple[ColumnPlan, ...]
    key_columns: tuple[str, ...]
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def column_schema(self) -> pa.Schema:
        """The source columns as the lake types them."""
        return pa.schema([pa.field(p.name, delta_type(p.arrow)) for p in self.plans])

    @property
    def arrow_schema(self) -> pa.Schema:
        """The schema of the rows `read` yields (`_tm_row` added for a table without a key)."""
        schema = self.column_schema
        return schema if self.key_columns else schema.append(pa.field(ROW, pa.string()))

    def select_sql(self, where: str | None = None) -> str:
        """The `SELECT` the reader copies (`where`: the range's predicate)."""
        columns = [p.sql for p in self.plans] + [expression for _, expression in self.extra]
        query = f"SELECT {', '.join(columns)} FROM {sql_name(self.schema, self.name)}"
        return f"{query} WHERE {where}" if where else query

    def read(
        self, cursor: Any, where: str | None = None, *, block_bytes: int = BLOCK_BYTES
    ) -> Iterator[tuple[ReadTable, pa.Table | None]]:
        """Copy the rows matching `where` in the cursor's transaction; yield each block
        typed, with the `extra` columns (or None) beside it.

        Raises:
            psycopg2.Error: the server failed (the caller decides whether to retry).
        """
        sql = f"COPY ({self.select_sql(where)}) TO STDOUT WITH (FORMAT csv)"
        names = [p.name for p in self.plans] + [name for name, _ in self.extra]
        read_fd, write_fd = os.pipe()
        _widen(write_fd, block_bytes)
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(write_fd, "wb", buffering=1 << 20) as sink:
                    cursor.copy_expert(sql, sink)
            except BaseException as exc:  # handed to the reading side
                failure.append(exc)

        producer = threading.Thread(target=produce, name="tm-copy", daemon=True)
        producer.start()
        source = os.fdopen(read_fd, "rb", buffering=block_bytes)  # whole blocks per read
        try:
            reader = pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(
                    column_names=[f"c{i}" for i in range(len(names))], block_size=block_bytes
                ),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={f"c{i}": pa.string() for i in range(len(names))},
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    null_values=[""],
                ),
            )
            for batch in reader:
                texts = pa.Table.from_batches([batch]).rename_columns(names)
                extra = texts.select([n for n, _ in self.extra]) if self.extra else None
                yield self.typed(texts), extra
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" not in str(exc):
                raise
        finally:
            source.close()
            producer.join()
        if failure:
            raise failure[0]

    def typed(self, texts: pa.Table) -> ReadTable:
        """CSV texts (one column per plan) -> typed rows and dead letters."""
        bad: dict[int, str] = {}
        columns: list[pa.Array] = []
        for plan in self.plans:
            text = texts.column(plan.name).combine_chunks()
            try:
                columns.append(_convert(plan, text))
            except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
                columns.append(self._isolate(plan, text, bad))
        rows = pa.Table.from_arrays(columns, schema=self.column_schema)
        letters: list[DeadLetter] = []
        if bad:
            keep = pa.array([i not in bad for i in range(texts.num_rows)], pa.bool_())
            letters = self._letters(texts, bad)
            rows = rows.filter(keep)
        if not self.key_columns:
            names = [p.name for p in self.plans]
            rows = rows.append_column(ROW, row_digests(rows, names))
        return ReadTable(rows, letters)

    def _isolate(self, plan: ColumnPlan, text: pa.Array, bad: dict[int, str]) -> pa.Array:
        """Convert one column value by value, recording the rows that fail; those rows
        get NULL here (they are dropped with their dead letters)."""
        target = delta_type(plan.arrow)
        values: list[pa.Array] = []
        for index in range(len(text)):
            one = text.slice(index, 1)
            try:
                values.append(_convert(plan, one))
            except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError) as exc:
                bad.setdefault(index, f"column `{plan.name}`: {_reason(exc)}")
                values.append(pa.nulls(1, target))
        return pa.concat_arrays(values) if values else pa.array([], target)

    def _letters(self, texts: pa.Table, bad: dict[int, str]) -> list[DeadLetter]:
        rows = texts.take(pa.array(sorted(bad), pa.int64())).to_pylist()
        return [
            DeadLetter(
                table=self.table,
                raw_key=json.dumps({k: row.get(k) for k in self.key_columns}, ensure_ascii=False),
                raw_value=json.dumps(row, ensure_ascii=False),
                reason=reason,
                origin=f"loader:{self.table}",
                position=None,
            )
            for row, reason in zip(rows, (bad[i] for i in sorted(bad)), strict=True)
        ]


def _widen(pipe_fd: int, size: int) -> None:
    """Let the pipe hold up to `size` bytes (Linux caps it at `fs.pipe-max-size`, 1 MiB by
    default): with the default 64 KiB, the COPY thread and the CSV reader switched places
    every 64 KiB. Best effort: elsewhere, or past the cap, the pipe keeps its size."""
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe_fd, fcntl.F_SETPIPE_SZ, min(size, 1 << 20))


def _convert(plan: ColumnPlan, text: pa.Array) -> pa.Array:
    return delta_array(plan.convert(text))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text.removeprefix("Invalid: ")


def session(cursor: Any, settings: Sequence[str]) -> None:
    """Apply the reader's session settings (`columns.SESSION_SETTINGS`) to a cursor."""
    for statement in settings:
        cursor.execute(statement)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed read may succeed if tried again (the connection went away)."""
    return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)

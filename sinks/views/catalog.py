"""The consumer views of a lake, defined once: names, column lists, masking, macros.

Names (docs/consumers.md): one DuckDB schema per layer, `changelog`, `live`, `forensic`, and
`gold` for the gold models, holding a view per lake table under its full name, quoted since it
has dots (`live."bank.public.customers"`), and under its last name part when that is unique
in the lake (`live.customers`). Table macros:

- `as_of(table, ts)`: the forensic versions valid at `ts` (the table as the source held it);
- `changes_between(table, t1, t2)`: the changelog events committed after `t1` up to `t2`.

Every view lists its columns (no `SELECT *`): a view whose table later gains a column keeps
working (a `SELECT *` view fails to bind once the table's shape changes) and shows the new
column after the next reconcile; a column that disappears from the table stays in the view
as NULL, as the lake itself keeps dropped source columns. Tidemark's physical partition
columns (`_tm_bucket`, `_tm_current`) are not shown. Classified columns are masked
(`masking.py`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import duckdb

from tidemark.kernel.columns import (
    BUCKET,
    CURRENT,
    POSITION,
    SOURCE_TS,
    VALID_FROM,
    VALID_TO,
    Layer,
)
from tidemark.kernel.names import from_path_segment
from tidemark.sinks.delta.table import raise_if_damaged
from tidemark.sinks.views.duck import literal, quote
from tidemark.sinks.views.masking import Masking
from tidemark.sinks.views.storage import is_local, join, list_dirs, local_path

log = logging.getLogger(__name__)

GOLD = "gold"
SCHEMAS = (*(layer.value for layer in Layer), GOLD)
HIDDEN = frozenset({BUCKET, CURRENT})


@dataclass(frozen=True)
class LakeTable:
    """One Delta table of the lake: its schema (a layer, or `gold`), name and location."""

    schema: str
    name: str
    uri: str

    @property
    def layer(self) -> Layer | None:
        return None if self.schema == GOLD else Layer(self.schema)


def discover(root: str, *, storage_options: Mapping[str, str] | None = None) -> list[LakeTable]:
    """Every Delta table under `<root>/<layer>/` and `<root>/gold/`, in schema then name order."""
    found: list[LakeTable] = []
    for schema in SCHEMAS:
        for name in list_dirs(join(root, schema), storage_options):
            if name.startswith((".", "_")):
                continue
            uri = join(root, schema, name)
            if is_local(uri):
                uri = local_path(uri)
                if not os.path.isdir(os.path.join(uri, "_delta_log")):
                    continue
            found.append(LakeTable(schema, from_path_segment(name), uri))
    return found


def short_names(names: Collection[str]) -> dict[str, str]:
    """Lake table name -> its last part, for the parts that are unique across the lake."""
    ordered = sorted(names)
    last = [name.rsplit(".", 1)[-1] for name in ordered]
    return {
        name: part
        for name, part in zip(ordered, last, strict=True)
        if last.count(part) == 1 and part != name
    }


def delta_scan(table: LakeTable) -> str:
    """The relation that reads a table's latest commit through the delta extension."""
    return f"delta_scan({literal(table.uri)})"


@dataclass(frozen=True)
class View:
    """One view as installed: where, over which table, with which columns (name, type)."""

    schema: str
    name: str
    table: LakeTable
    columns: tuple[tuple[str, str], ...]
    masked: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    kept_as_null: tuple[str, ...] = ()


@dataclass
class Catalog:
    """The views over a set of lake tables.

    Args:
        tables: every table of the lake (short names are unique across all of them).
        masking: classified columns and the lake's key.
    """

    tables: Sequence[LakeTable]
    masking: Masking = field(default_factory=Masking)

    def __post_init__(self) -> None:
        self.aliases = {
            schema: short_names([t.name for t in self.tables if t.schema == schema])
            for schema in SCHEMAS
        }

    def names_of(self, table: LakeTable) -> list[str]:
        """The view names of a table in its schema: full name, then the short one if unique."""
        alias = self.aliases[table.schema].get(table.name)
        return [table.name] + ([alias] if alias else [])

    def resolve(self, schema: str, name: str) -> LakeTable | None:
        """The table a view name (full or short) of `schema` stands for."""
        for table in self.tables:
            if table.schema == schema and name in self.names_of(table):
                return table
        return None

    def install(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        relation: Callable[[LakeTable], str] = delta_scan,
        only: Collection[LakeTable] | None = None,
        reconcile: bool = False,
    ) -> list[View]:
        """Create (or replace) the schemas, views and macros in `con`.

        Args:
            relation: the SQL relation each table is read from (default: its latest commit).
            only: install views for these tables only (a model's inputs).
            reconcile: keep the columns the existing views of `con` show (a views file
                written before): a column the table no longer has stays, as NULL.
        """
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        views: list[View] = []
        for table in self.tables:
            if only is not None and table not in only:
                continue
            source = relation(table)
            try:
                found = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
            except duckdb.Error as exc:
                raise_if_damaged(table.uri)  # a damaged log: name it and `tidemark repair`
                # A table whose first commit is still being written (or was cut off) has a
                # `_delta_log` folder and nothing readable yet: leave it out, say so.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning(
                    "%s.%s is not readable yet, left out: %s", table.schema, table.name, first
                )
                continue
            for name in self.names_of(table):
                previous = _view_columns(con, table.schema, name) if reconcile else {}
                view = self._view(table, name, found, previous)
                con.execute(
                    f"CREATE OR REPLACE VIEW {table.schema}.{quote(name)} AS "
                    f"SELECT {_select_list(self, view, found)} FROM {source}"
                )
                views.append(view)
        _macros(con)
        log.debug("%d views installed", len(views))
        return views

    def _view(
        self,
        table: LakeTable,
        name: str,
        found: Sequence[tuple[object, ...]],
        previous: Mapping[str, str],
    ) -> View:
        columns: list[tuple[str, str]] = []
        masked, dropped = [], []
        for row in found:
            column, kind = str(row[0]), str(row[1])
            if column in HIDDEN:
                continue
            rule = self.masking.of(table.name, column) if table.schema != GOLD else None
            if rule is not None and rule[1] == "drop":
                dropped.append(column)
                continue
            if rule is not None:
                masked.append(column)
                kind = "VARCHAR"
            columns.append((column, kind))
        present = {c for c, _ in columns} | set(dropped)
        kept = [(c, k) for c, k in previous.items() if c not in present and c not in HIDDEN]
        return View(
            table.schema,
            name,
            table,
            tuple(columns + kept),
            tuple(masked),
            tuple(dropped),
            tuple(c for c, _ in kept),
        )


def _select_list(catalog: Catalog, view: View, found: Sequence[tuple[object, ...]]) -> str:
    physical = {str(row[0]) for row in found}
    parts = []
    for column, kind in view.columns:
        if column not in physical:
            parts.append(f"CAST(NULL AS {kind}) AS {quote(column)}")
            continue
        expression = (
            catalog.masking.expression(view.table.name, column)
            if view.table.schema != GOLD
            else quote(column)
        )
        assert expression is not None  # dropped columns are not in view.columns
        parts.append(
            expression if expression == quote(column) else f"{expression} AS {quote(column)}"
        )
    return ", ".join(parts) if parts else "NULL AS _tm_empty"


def _view_columns(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [schema, name],
    ).fetchall()
    return {str(column): str(kind) for column, kind in rows}


def _macros(con: duckdb.DuckDBPyConnection) -> None:
    ts = "CAST(ts AS TIMESTAMPTZ)"
    con.execute(
        f"""CREATE OR REPLACE MACRO as_of(t, ts) AS TABLE
            SELECT * FROM query_table('forensic."' || t || '"')
            WHERE {VALID_FROM} <= {ts} AND ({VALID_TO} IS NULL OR {VALID_TO} > {ts})"""
    )
    con.execute(
        f"""CREATE OR REPLACE MACRO changes_between(t, t1, t2) AS TABLE
            SELECT * FROM query_table('changelog."' || t || '"')
            WHERE {SOURCE_TS} > CAST(t1 AS TIMESTAMPTZ) AND {SOURCE_TS} <= CAST(t2 AS TIMESTAMPTZ)
            ORDER BY {POSITION}"""
    )

"""`tidemark views`: a DuckDB database file of consumer views over the lake.

The file holds only view and macro definitions (sinks/views/catalog.py); the data stays in
the Delta tables, read through DuckDB's `delta` extension at query time, so the views are
always current. Any DuckDB client opens it without Tidemark: it needs DuckDB's `delta`
extension (DuckDB installs it on first use where it has network access; offline, load it from
PyPI's `duckdb-ext-delta`, built for DuckDB 1.4.4). Rerunning the command reconciles the file
with the lake: new tables and columns appear, a column that is gone stays as NULL, the views
of tables that are gone are dropped. Credentials are never written into the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tidemark.config import PipelineConfig
from tidemark.kernel.errors import UsageError
from tidemark.sinks.views.catalog import SCHEMAS, Catalog, View, discover
from tidemark.sinks.views.duck import connect, quote
from tidemark.sinks.views.masking import Action, Masking, lake_key

logger = logging.getLogger(__name__)


def masking_for(config: PipelineConfig) -> Masking:
    """The config's classified columns per lake table, with the lake's key when one hashes."""
    columns: dict[str, dict[str, tuple[str, Action]]] = {}
    for source in config.sources:
        for table in config.lake_tables_of(source):
            rules = {c: (tag, policy.mask) for c, (tag, policy) in config.classified(table).items()}
            if rules:
                columns[table] = rules
    hashes = any(action == "hash" for rules in columns.values() for _, action in rules.values())
    key = lake_key(config.lake, config.storage_options) if hashes else None
    return Masking(columns, key)


@dataclass(frozen=True)
class ViewsReport:
    """What a run of `tidemark views` did to the file."""

    path: Path
    views: tuple[View, ...]
    dropped: tuple[str, ...]


def write_views(config: PipelineConfig, path: Path) -> ViewsReport:
    """Create or reconcile the views file at `path`.

    Raises:
        UsageError: the lake holds no tables yet, or `path` is not a DuckDB database.
    """
    tables = discover(config.lake, storage_options=config.storage_options)
    if not tables:
        raise UsageError(
            f"no Delta tables under `{config.lake}`",
            hint="run the pipeline first (`tidemark up` or `tidemark run --config FILE`)",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = connect(str(path), storage_options=config.storage_options)
    except duckdb.Error as exc:
        raise UsageError(
            f"cannot open `{path}` as a DuckDB database: {str(exc).splitlines()[0]}",
            hint="name a new file, or one `tidemark views` wrote (close other clients first)",
        ) from exc
    try:
        catalog = Catalog(tables, masking_for(config))
        con.execute("BEGIN TRANSACTION")  # readers of the file see all of it or none
        try:
            views = catalog.install(con, reconcile=True)
            dropped = _drop_stale(con, {(v.schema, v.name) for v in views})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("CHECKPOINT")
    finally:
        con.close()
    logger.info("%s: %d views, %d dropped", path, len(views), len(dropped))
    return ViewsReport(path, tuple(views), tuple(dropped))


def _drop_stale(con: duckdb.DuckDBPyConnection, wanted: set[tuple[str, str]]) -> list[str]:
    """Drop the views in Tidemark's schemas whose table is no longer in the lake."""
    rows = con.execute(
        "SELECT schema_name, view_name FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT internal"
    ).fetchall()
    dropped = []
    for schema, name in rows:
        if schema in SCHEMAS and (schema, name) not in wanted:
            con.execute(f"DROP VIEW {schema}.{quote(name)}")
            dropped.append(f"{schema}.{name}")
    return dropped

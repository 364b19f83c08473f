"""Readers that apply deletion vectors: what Tidemark reads a lake table through.

A merge-on-read table's files still hold the rows its deletion vectors (DVs) delete. Readers
that ignore DVs return old and deleted rows: delta-rs `to_pyarrow_table`/`to_pyarrow_dataset`
/`to_pandas` refuse such a table, and `DeltaTable.count()` sums the files' row counts and is
simply wrong. So:

- `read_table`: delta-rs `scan()` (its DataFusion reader applies DVs);
- `count_rows`: statistics minus DV cardinalities, from the log;
- `register`: a relation in a DuckDB connection. A table without the DV feature is read
  through `to_pyarrow_dataset` as before; a DV table through DuckDB's `delta` extension
  (`delta_scan`, loaded offline from the `duckdb-ext-delta` package, built for DuckDB
  1.4.4), or, where that cannot run (an object store, another DuckDB), materialised from
  delta-rs `scan()`.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import Mapping, Sequence
from itertools import count

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from tidemark.sinks.delta.dv.log import LogState
from tidemark.sinks.delta.dv.store import open_store

log = logging.getLogger(__name__)

_names = count()


def has_deletion_vectors(dt: DeltaTable) -> bool:
    """True when readers must apply DVs (the protocol lists the feature)."""
    return "deletionVectors" in (dt.protocol().reader_features or [])


def read_table(
    dt: DeltaTable, *, columns: Sequence[str] | None = None, predicate: str | None = None
) -> pa.Table:
    """The table's rows (DVs applied), optionally some columns or rows (DataFusion SQL)."""
    return pa.table(dt.scan(columns=list(columns) if columns else None, predicate=predicate))


def count_rows(uri: str, storage_options: Mapping[str, str] | None = None) -> int:
    """Rows of the table at `uri`, exact: files' row counts minus what their DVs delete."""
    state = LogState.load(open_store(uri, storage_options))
    rows = state.rows()
    if rows is not None:
        return rows
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    return int(read_table(dt, columns=[dt.schema().fields[0].name]).num_rows)


def extension_directory() -> str:
    """Where the `duckdb-ext-*` packages put their extensions (site-packages)."""
    return os.path.join(sysconfig.get_paths()["purelib"], "duckdb_ext", "extensions")


def load_delta_extension(con: duckdb.DuckDBPyConnection) -> bool:
    """Load DuckDB's `delta` extension from the installed package, never from the network."""
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute(f"SET extension_directory = '{extension_directory()}'")
        con.execute("LOAD delta")
    except duckdb.Error as exc:
        log.info("DuckDB's delta extension is not available (%s)", str(exc).splitlines()[0])
        return False
    return True


def register(
    con: duckdb.DuckDBPyConnection,
    name: str,
    uri: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    dt: DeltaTable | None = None,
) -> str:
    """Make the Delta table at `uri` readable as relation `name`; returns how
    (`dataset`, `delta_scan` or `materialised`)."""
    dt = dt or DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    quoted = '"' + name.replace('"', '""') + '"'
    if not has_deletion_vectors(dt):
        con.register(name, dt.to_pyarrow_dataset())
        return "dataset"
    local = uri.removeprefix("file://") if "://" not in uri or uri.startswith("file://") else None
    if local is not None and load_delta_extension(con):
        path = os.path.abspath(local).replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW {quoted} AS SELECT * FROM delta_scan('{path}')")
        return "delta_scan"
    hidden = f"_tm_scan_{next(_names)}"
    con.register(hidden, read_table(dt))
    con.execute(f"CREATE OR REPLACE TABLE {quoted} AS SELECT * FROM {hidden}")
    con.unregister(hidden)
    return "materialised"

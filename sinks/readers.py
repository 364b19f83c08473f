"""Readers that apply deletion vectors: what Tidemark reads a lake table through.

A merge-on-read table's files still hold the rows its deletion vectors (DVs) delete. Readers
that ignore DVs return old and deleted rows: delta-rs `to_pyarrow_table`/`to_pyarrow_dataset`
/`to_pandas` refuse such a table, and `DeltaTable.count()` sums the files' row counts and is
simply wrong. So:

- `read_table`: delta-rs `scan()` (its DataFusion reader applies DVs);
- `count_rows`: statistics minus DV cardinalities, from the log;
- `register`: a relation in a DuckDB connection. A table without the DV feature is read
  through `to_pyarrow_dataset` as before; a DV table through DuckDB's `delta` extension
  (`delta_scan`, loaded offline by the consumers' `sinks.views.duck.load_delta`), or, where
  that cannot run (an object store, another DuckDB), materialised from delta-rs `scan()`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from itertools import count

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

from tidemark.sinks.delta.dv.log import LogState
from tidemark.sinks.delta.dv.store import open_store
from tidemark.sinks.delta.table import scan_table
from tidemark.sinks.views.duck import DeltaExtensionMissing, load_delta

log = logging.getLogger(__name__)

_names = count()


def has_deletion_vectors(dt: DeltaTable) -> bool:
    """True when readers must apply DVs (the protocol lists the feature)."""
    return "deletionVectors" in (dt.protocol().reader_features or [])


def read_table(
    dt: DeltaTable, *, columns: Sequence[str] | None = None, predicate: str | None = None
) -> pa.Table:
    """The table's rows (DVs applied), optionally some columns or rows (DataFusion SQL)."""
    return scan_table(dt, columns=columns, predicate=predicate)


def count_rows(uri: str, storage_options: Mapping[str, str] | None = None) -> int:
    """Rows of the table at `uri`, exact: files' row counts minus what their DVs delete."""
    state = LogState.load(open_store(uri, storage_options))
    rows = state.rows()
    if rows is not None:
        return rows
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    return int(read_table(dt, columns=[dt.schema().fields[0].name]).num_rows)


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
    if local is not None and _load_delta(con):
        path = os.path.abspath(local).replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW {quoted} AS SELECT * FROM delta_scan('{path}')")
        return "delta_scan"
    hidden = f"_tm_scan_{next(_names)}"
    con.register(hidden, read_table(dt))
    con.execute(f"CREATE OR REPLACE TABLE {quoted} AS SELECT * FROM {hidden}")
    con.unregister(hidden)
    return "materialised"


def _load_delta(con: duckdb.DuckDBPyConnection) -> bool:
    """Load DuckDB's `delta` extension (the consumers' loader); False when it cannot load."""
    try:
        load_delta(con)
    except DeltaExtensionMissing as exc:
        log.info("%s", exc)
        return False
    return True

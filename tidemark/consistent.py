"""Reading a lake table's layers at its consistent cut, for `query` and `verify`.

The lake's consistent-cut watermark W (`sinks/watermark.py`) is the last batch after which
it holds whole source transactions only. A transaction bigger than a batch is committed in
parts, and any batch reaches its tables one Delta commit at a time; read at W, every table
and layer shows the same transaction-consistent cut of the source:

- changelog: `_tm_batch <= W`;
- forensic: `_tm_batch_in <= W`, a version closed after W (`_tm_batch_out > W`) still open;
- live: the Delta version that holds no batch above W (time travel).

Two readers: `verify` scans pyarrow datasets (`layer_at`); `query` reads through DuckDB's
delta extension, the consumer views' relation (`cut_relation`). Without a watermark (a lake
written by the distributed runtime, or by an older Tidemark) the layers are read as they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping

import duckdb
import pyarrow.dataset as ds
from deltalake import DeltaTable

from tidemark.kernel.columns import BATCH, BATCH_IN, BATCH_OUT, CURRENT, VALID_TO, Layer
from tidemark.sinks.readers import has_deletion_vectors, read_table, register
from tidemark.sinks.views.catalog import LakeTable, delta_scan
from tidemark.sinks.views.duck import literal
from tidemark.sinks.watermark import Watermark, live_version, newest_batch

_attached = itertools.count()


def cut_select(layer: Layer, relation: str, w: int, columns: Collection[str]) -> str:
    """A SELECT of every column of `relation` (one layer of one table) as of batch `w`."""
    if layer is Layer.CHANGELOG and BATCH in columns:
        return f"SELECT * FROM {relation} WHERE {BATCH} <= {w}"
    if layer is Layer.FORENSIC and {BATCH_IN, BATCH_OUT, VALID_TO} <= set(columns):
        later = f"{BATCH_OUT} > {w}"  # closed after the cut: open as of it
        reopened = [
            f"CASE WHEN {later} THEN NULL ELSE {VALID_TO} END AS {VALID_TO}",
            f"CASE WHEN {later} THEN NULL ELSE {BATCH_OUT} END AS {BATCH_OUT}",
        ]
        if CURRENT in columns:
            reopened.append(f"({CURRENT} OR coalesce({later}, false)) AS {CURRENT}")
        return f"SELECT * REPLACE ({', '.join(reopened)}) FROM {relation} WHERE {BATCH_IN} <= {w}"
    return f"SELECT * FROM {relation}"


def _live_version(uri: str, w: int, options: Mapping[str, str] | None) -> int | bool | None:
    """True: read live as it is (it holds no batch above the cut); None: it did not exist at
    the cut; else the Delta version to read."""
    dt = DeltaTable(uri, storage_options=dict(options or {}) or None)
    newest = newest_batch(dt)
    if newest is None or newest <= w:
        return True
    return live_version(dt, w)


def layer_at(
    uri: str,
    layer: Layer,
    watermark: Watermark | None,
    storage_options: Mapping[str, str] | None = None,
) -> tuple[ds.Dataset, str]:
    """The dataset to scan for one layer, and a SELECT over `{ds}` giving it at `watermark`.

    The SELECT keeps every column; format it with the name the dataset is registered under.
    """
    options = dict(storage_options or {}) or None
    dt = DeltaTable(uri, storage_options=options)
    if watermark is None:
        return dt.to_pyarrow_dataset(), "SELECT * FROM {ds}"
    if layer is Layer.LIVE:
        version = _live_version(uri, watermark.batch_id, storage_options)
        if version is True:
            return dt.to_pyarrow_dataset(), "SELECT * FROM {ds}"
        if version is None:  # created after the cut: empty at it
            return dt.to_pyarrow_dataset(), "SELECT * FROM {ds} WHERE false"
        at = DeltaTable(uri, version=int(version), storage_options=options)
        return at.to_pyarrow_dataset(), "SELECT * FROM {ds}"
    dataset = dt.to_pyarrow_dataset()
    return dataset, cut_select(layer, "{ds}", watermark.batch_id, dataset.schema.names)


def register_layer(
    con: duckdb.DuckDBPyConnection,
    hidden: str,
    uri: str,
    layer: Layer,
    watermark: Watermark | None,
    storage_options: Mapping[str, str] | None = None,
) -> str:
    """Register one layer's dataset as `hidden`; returns the SELECT giving it at `watermark`
    (create the views over it). A merge-on-read layer (deletion vectors) is never a
    pyarrow dataset: it is registered by `sinks.readers.register`."""
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    if has_deletion_vectors(dt):
        return _register_dv_layer(con, hidden, dt, layer, watermark, storage_options)
    dataset, select = layer_at(uri, layer, watermark, storage_options)
    con.register(hidden, dataset)
    return select.format(ds=hidden)


def _register_dv_layer(
    con: duckdb.DuckDBPyConnection,
    hidden: str,
    dt: DeltaTable,
    layer: Layer,
    watermark: Watermark | None,
    storage_options: Mapping[str, str] | None,
) -> str:
    uri = dt.table_uri
    if layer is Layer.LIVE and watermark is not None:
        version = _live_version(uri, watermark.batch_id, storage_options)
        if version is None:  # created after the cut: empty at it
            register(con, hidden, uri, storage_options=storage_options, dt=dt)
            return f"SELECT * FROM {hidden} WHERE false"
        if version is not True:  # live at the cut's version, DVs applied
            options = dict(storage_options or {}) or None
            at = DeltaTable(uri, version=int(version), storage_options=options)
            con.register(hidden, read_table(at))
            return f"SELECT * FROM {hidden}"
    register(con, hidden, uri, storage_options=storage_options, dt=dt)
    if watermark is None or layer is Layer.LIVE:
        return f"SELECT * FROM {hidden}"
    columns = [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {hidden}").fetchall()]
    return cut_select(layer, hidden, watermark.batch_id, columns)


def cut_relation(
    con: duckdb.DuckDBPyConnection,
    watermark: Watermark | None,
    storage_options: Mapping[str, str] | None = None,
) -> Callable[[LakeTable], str]:
    """The consumer views' relation (`Catalog.install(relation=...)`) reading each table at
    `watermark` through DuckDB's delta extension; a live table newer than the cut is
    attached at its version there (`ATTACH ... (TYPE delta, VERSION n)`)."""

    def relation(table: LakeTable) -> str:
        base = delta_scan(table)
        layer = table.layer
        if watermark is None or layer is None:
            return base
        w = watermark.batch_id
        if layer is not Layer.LIVE:
            columns = [str(r[0]) for r in con.execute(f"DESCRIBE SELECT * FROM {base}").fetchall()]
            return f"({cut_select(layer, base, w, columns)})"
        version = _live_version(table.uri, w, storage_options)
        if version is True:
            return base
        if version is None:
            return f"(SELECT * FROM {base} WHERE false)"
        alias = f"_tm_live_at_{next(_attached)}"
        con.execute(f"ATTACH {literal(table.uri)} AS {alias} (TYPE delta, VERSION {version})")
        return alias

    return relation

"""Read one Delta table with every engine that applies deletion vectors, for comparisons.

delta-rs `scan()` and `QueryBuilder`, polars, and DuckDB 1.4.4 with the `delta` extension
loaded from its PyPI package (offline). Each answer is cast to the scan's schema and sorted,
so the engines can be compared row for row.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

from tidemark.sinks.readers import read_table
from tidemark.sinks.views.duck import load_delta

ENGINES = ("scan", "querybuilder", "polars", "duckdb")


def _rows(table: pa.Table, schema: pa.Schema) -> list[dict]:
    rows = table.select(schema.names).cast(schema).to_pylist()
    return sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r.values()))


def read_every_way(uri: str, storage_options: dict | None = None) -> dict[str, list[dict]]:
    """engine -> the table's rows, as that engine reads them (local tables for DuckDB)."""
    dt = DeltaTable(uri, storage_options=storage_options or None)
    reference = read_table(dt)
    schema = reference.schema
    out = {"scan": _rows(reference, schema)}
    query = QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all()
    out["querybuilder"] = _rows(pa.table(query), schema)
    out["polars"] = _rows(pl.read_delta(uri, storage_options=storage_options).to_arrow(), schema)
    if "://" not in uri or uri.startswith("file://"):
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        load_delta(con)  # offline, from the installed package; raises when it cannot
        path = uri.removeprefix("file://")
        duck = con.sql(f"SELECT * FROM delta_scan('{path}')").to_arrow_table()
        out["duckdb"] = _rows(duck, schema)
    return out

"""Rows of local Parquet files by position, decoding only those rows.

A lookup of keys spread over a big table wants a few rows of every row group, and pyarrow
decodes whole row groups to give them. DuckDB's Parquet reader filters on the row number
first and materializes the other columns only for the rows it keeps. Measured on the
10M-row forensic table of `bench/e2e.py` (21 files), 50,000 rows spread uniformly: 0.5 s
(0.9 s of CPU) in one query over the files, against 1.1 s (1.8 s of CPU) reading the files
with pyarrow and taking the rows. One query over the files, on a database of its own that
closes with the memory it held (a database per file cost more than the reads saved).

Whatever DuckDB cannot read as asked (a column named `file_row_number` or `_tm_file`, a type
it maps differently from pyarrow) raises `SelectFailed`; the caller then reads with pyarrow.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

_FILE = "_tm_file"


class SelectFailed(Exception):
    """DuckDB could not give the rows as asked: read them another way."""


def select_rows(
    wanted: Mapping[str, pa.Array], schemas: Mapping[str, pa.Schema]
) -> dict[str, pa.Table]:
    """Per local Parquet file, rows `wanted[path]` (sorted positions, int64), in that order
    and with the file's Arrow schema (`schemas[path]`, as pyarrow reads the file).

    Raises:
        SelectFailed: DuckDB failed, gave another number of rows than asked for, or types
            that do not cast back exactly.
    """
    paths = list(wanted)
    if not paths:
        return {}
    try:
        asked = pa.table(
            {
                _FILE: pa.concat_arrays(
                    [
                        pa.repeat(pa.scalar(i, pa.int32()), len(wanted[p]))
                        for i, p in enumerate(paths)
                    ]
                ),
                "r": pa.concat_arrays([wanted[p].cast(pa.int64()) for p in paths]),
                "name": pa.concat_arrays([pa.repeat(pa.scalar(p), len(wanted[p])) for p in paths]),
            }
        )
        with duckdb.connect() as con:  # its own database, closed with the memory it held
            con.execute("SET TimeZone = 'UTC'")
            con.register("_tm_wanted", asked)
            found = con.execute(
                f"SELECT w.{_FILE}, p.* EXCLUDE (filename, file_row_number) "
                "FROM read_parquet(?, filename = true, file_row_number = true, "
                "hive_partitioning = false, union_by_name = true) p "
                "JOIN _tm_wanted w ON p.filename = w.name AND p.file_row_number = w.r "
                f"ORDER BY w.{_FILE}, p.file_row_number",
                [paths],
            ).fetch_arrow_table()
        if found.num_rows != asked.num_rows:
            raise SelectFailed(f"{found.num_rows} rows of {asked.num_rows} asked for")
        counts = pc.value_counts(found.column(_FILE)).to_pylist()
        if {c["values"]: c["counts"] for c in counts} != {
            i: len(wanted[p]) for i, p in enumerate(paths)
        }:
            raise SelectFailed("rows of one file counted for another")
        out, start = {}, 0
        for path in paths:
            part = found.slice(start, len(wanted[path]))
            start += len(wanted[path])
            schema = schemas[path]
            out[path] = part.select(schema.names).cast(schema)  # safe: fails, never alters
        return out
    except (duckdb.Error, pa.ArrowException, KeyError, ValueError) as exc:
        raise SelectFailed(str(exc)) from exc

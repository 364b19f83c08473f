"""Rows of a Parquet file by position through DuckDB (`sinks/delta/dv/select.py`): exactly
the rows pyarrow reads, with pyarrow's types, or `SelectFailed` so the caller reads them
another way."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tidemark.sinks.delta.dv.select import SelectFailed, select_rows

N = 5_000


def schemas(*paths: str) -> dict[str, pa.Schema]:
    return {path: pq.read_schema(path) for path in paths}


def every_type() -> pa.Table:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table(
        {
            "id": pa.array(range(N), pa.int64()),
            "small": pa.array([i % 100 for i in range(N)], pa.int8()),
            "amount": pa.array([Decimal(i) / 100 for i in range(N)], pa.decimal128(12, 2)),
            "ratio": pa.array([i / 7 for i in range(N)], pa.float64()),
            "name": pa.array([None if i % 9 == 0 else f"n{i}" for i in range(N)]),
            "blob": pa.array([bytes([i % 256]) * 3 for i in range(N)], pa.binary()),
            "flag": pa.array([i % 2 == 0 for i in range(N)]),
            "day": pa.array([date(2020, 1, 1) + timedelta(days=i) for i in range(N)]),
            "at": pa.array(
                [t0 + timedelta(seconds=i) for i in range(N)], pa.timestamp("us", tz="UTC")
            ),
            "local": pa.array(
                [datetime(2026, 1, 1) + timedelta(seconds=i) for i in range(N)],
                pa.timestamp("us"),
            ),
            "tags": pa.array([[f"t{i % 3}", "u"] for i in range(N)], pa.list_(pa.string())),
            "point": pa.array(
                [{"x": i, "y": str(i)} for i in range(N)],
                pa.struct([("x", pa.int64()), ("y", pa.string())]),
            ),
        }
    )


def test_the_rows_asked_for_with_pyarrows_types(tmp_path):
    table = every_type()
    path = str(tmp_path / "_tm_current=true" / "f.parquet")  # a partition folder is not a column
    (tmp_path / "_tm_current=true").mkdir()
    pq.write_table(table, path, row_group_size=1_000)
    rows = pa.array([0, 1, 999, 1_000, 2_500, 4_999], pa.int64())
    assert select_rows({path: rows}, schemas(path))[path].equals(table.take(rows))


def test_files_of_several_schemas_each_with_its_own_rows(tmp_path):
    """One query over the files: each gets its own rows, an older file without a newer
    column comes back as it is (the caller adds the column)."""
    old, new = str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")
    pq.write_table(pa.table({"id": pa.array(range(10), pa.int64())}), old)
    newer = pa.table(
        {"id": pa.array(range(100, 120), pa.int64()), "v": [f"v{i}" for i in range(20)]}
    )
    pq.write_table(newer, new)
    got = select_rows(
        {new: pa.array([0, 19], pa.int64()), old: pa.array([5], pa.int64())}, schemas(new, old)
    )
    assert got[old].to_pylist() == [{"id": 5}]
    assert got[new].equals(newer.take([0, 19]))


def test_rows_past_the_end_fail_so_the_caller_reads_another_way(tmp_path):
    path = str(tmp_path / "f.parquet")
    pq.write_table(every_type(), path)
    with pytest.raises(SelectFailed, match="rows of 2 asked for"):
        select_rows({path: pa.array([3, N + 10], pa.int64())}, schemas(path))


def test_a_column_named_like_duckdbs_row_number_fails_cleanly(tmp_path):
    path = str(tmp_path / "f.parquet")
    pq.write_table(pa.table({"file_row_number": [1, 2, 3]}), path)
    with pytest.raises(SelectFailed):
        select_rows({path: pa.array([1], pa.int64())}, schemas(path))

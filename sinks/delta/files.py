"""Data files written by Tidemark itself, one Parquet file per partition, for a file commit.

`write_deltalake(mode="overwrite", predicate=...)` takes the whole batch at once and, when
the predicate is not on partition columns only (forensic's is not), reads back every file
it replaces to keep the rows the predicate misses. A layer that rewrites many buckets (keys
spread evenly over a big table) paid for that in time and memory. Writing the files
ourselves lets a commit stream bucket by bucket and hold one group of buckets at a time.

Each file gets the Delta statistics delta-rs would give it (row count, null counts,
min/max), so data skipping keeps working. A min/max is left out whenever it could be
wrong (long strings, NaN, types we do not format): a missing statistic only skips less.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction

DEFAULT_INDEXED_COLUMNS = 32  # delta.dataSkippingNumIndexedCols
_MAX_STRING_STAT = 32  # writers truncate longer bounds (Spark at 32); we leave them out
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tidemark-files")


def stats_columns(dt: DeltaTable, partition_by: Sequence[str]) -> list[str]:
    """The columns a writer collects statistics for, as the table's properties say."""
    config = dt.metadata().configuration
    names = [f.name for f in dt.schema().fields if f.name not in partition_by]
    listed = config.get("delta.dataSkippingStatsColumns")
    if listed:
        wanted = {name.strip().strip("`") for name in listed.split(",")}
        return [name for name in names if name in wanted]
    limit = int(config.get("delta.dataSkippingNumIndexedCols", DEFAULT_INDEXED_COLUMNS))
    return names if limit < 0 else names[:limit]


def _bounded(dtype: pa.DataType) -> bool:
    """Whether we write min/max for a column of `dtype` (`_stat` formats exactly these)."""
    t = pa.types
    return (
        t.is_integer(dtype)
        or t.is_floating(dtype)
        or t.is_string(dtype)
        or t.is_large_string(dtype)
        or t.is_date(dtype)
        # Timestamps without a zone are left out: their text has no "Z", readers vary.
        or (t.is_timestamp(dtype) and dtype.tz is not None)
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS = (-719_162, 2_932_896)  # 0001-01-01 and 9999-12-31 in days since 1970: Delta's range
_MILLIS = (-62_135_596_800_000, 253_402_300_799_999)  # the same range in milliseconds


def _stat(value: pa.Scalar, dtype: pa.DataType, *, upper: bool) -> Any:
    """`value` as Delta writes it in min/max, or None to leave it out.

    Dates and timestamps are formatted from their integers: a bound outside Delta's range
    (or one that rounding would push out of it) is left out rather than raising.
    """
    if not value.is_valid:
        return None
    if pa.types.is_integer(dtype):
        return int(value.as_py())
    if pa.types.is_floating(dtype):
        number = value.as_py()
        return None if math.isnan(number) or math.isinf(number) else float(number)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        text = value.as_py()
        return text if len(text) <= _MAX_STRING_STAT else None
    if pa.types.is_date32(dtype):
        days = value.cast(pa.int32()).as_py()
        if not _DAYS[0] <= days <= _DAYS[1]:
            return None
        return (_EPOCH + timedelta(days=days)).date().isoformat()
    if pa.types.is_timestamp(dtype):
        # Delta keeps milliseconds: round the min down and the max up, so no row escapes.
        ticks = value.cast(pa.int64()).as_py()
        per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[dtype.unit]
        if per_ms is None:
            return None
        millis = -(-ticks // per_ms) if upper else ticks // per_ms
        if not _MILLIS[0] <= millis <= _MILLIS[1]:
            return None
        moment = _EPOCH + timedelta(milliseconds=millis)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return None


def file_stats(rows: pa.Table, columns: Sequence[str]) -> str:
    """The `stats` JSON of an add action holding `rows`."""
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in columns:
        if name not in rows.column_names:
            continue
        column = rows.column(name)
        dtype = column.type
        if pa.types.is_nested(dtype):
            continue  # Delta nests the statistics of a struct by field: none is safe
        nulls[name] = column.null_count
        if column.null_count == rows.num_rows or not _bounded(dtype):
            continue
        if pa.types.is_floating(dtype) and pc.any(pc.is_nan(column)).as_py():
            continue
        if _too_long(column):
            # No bounds for a column holding a long string (they were kept when neither
            # the min nor the max was long): comparing long strings, a position's 40
            # characters, cost more than such a rare bound is worth.
            continue
        bounds = pc.min_max(column)
        low = _stat(bounds["min"], dtype, upper=False)
        high = _stat(bounds["max"], dtype, upper=True)
        if low is not None and high is not None:
            minimum[name], maximum[name] = low, high
    return json.dumps(
        {
            "numRecords": rows.num_rows,
            "minValues": minimum,
            "maxValues": maximum,
            "nullCount": nulls,
        }
    )


def _too_long(column: pa.ChunkedArray) -> bool:
    """Whether a string column holds a value longer than Delta's string bounds we keep
    (bytes count: a string of more bytes than characters is rare and only loses a bound)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    longest = pc.max(pc.binary_length(column)).as_py()
    return longest is not None and longest > _MAX_STRING_STAT


def dictionary_columns(rows: pa.Table, sample: int = 10_000) -> list[str]:
    """The string columns of `rows` worth dictionary-encoding: those whose first `sample`
    rows repeat values (a status, a currency), not mostly distinct ones (an IBAN, a
    position), which the encoder would hash only to fall back to plain."""
    head = rows.slice(0, sample)
    wanted = []
    for field in rows.schema:
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        column = head.column(field.name)
        present = len(column) - column.null_count
        if present == 0 or pc.count_distinct(column).as_py() * 2 <= present:
            wanted.append(field.name)
    return wanted


def local_root(uri: str) -> str | None:
    """The local directory of a table at `uri`, None for an object store."""
    if uri.startswith("file://"):
        return unquote(uri.removeprefix("file://"))
    return None if "://" in uri else unquote(uri)


def table_filesystem(dt: DeltaTable, *, native: bool = True) -> pafs.FileSystem:
    """The table's location as a filesystem rooted there: native for a local path (writes
    stay out of Python), delta-rs's object store (with the table's credentials) otherwise or
    when `native` is False."""
    root = local_root(dt.table_uri)
    if native and root is not None:
        return pafs.SubTreeFileSystem(root, pafs.LocalFileSystem())
    return pafs.PyFileSystem(DeltaStorageHandler.from_table(dt._table))


class FileWriter:
    """Writes Parquet files into one Delta table's location and lists their add actions.

    Files land under `<partition>=<value>/...` like delta-rs's own; until the add actions
    are committed no reader sees them (an abandoned file is removed by a later vacuum).
    """

    def __init__(
        self,
        dt: DeltaTable,
        partition_by: Sequence[str],
        *,
        filesystem: pafs.FileSystem | None = None,
        row_group_rows: int | None = None,
        on_pool: bool = True,
    ) -> None:
        self.partition_by = list(partition_by)
        self.on_pool = on_pool
        self.row_group_rows = row_group_rows
        self.schema = pa.schema(
            [f for f in pa.schema(dt.schema().to_arrow()) if f.name not in self.partition_by]
        )
        self.stats = stats_columns(dt, self.partition_by)
        self.fs = filesystem or table_filesystem(dt)
        self._folders: set[str] = set()
        self.actions: list[AddAction] = []
        self.rows_written = 0
        self._pending: list[Future[AddAction]] = []

    def write(self, rows: pa.Table, partition: Mapping[str, str]) -> None:
        """Start writing one file holding `rows` (partition columns dropped) in `partition`.

        Files are encoded on a small shared pool (Parquet encoding releases the GIL), so a
        layer's buckets use both cores; `wait` collects them. A writer made with
        `on_pool=False` encodes in the calling thread: a maintenance round's files queued on
        the pool ahead of the files a commit waits for.
        """
        if rows.num_rows == 0:
            return
        data = rows.select(self.schema.names).cast(self.schema)
        folder = "/".join(f"{name}={partition[name]}" for name in self.partition_by)
        if folder and folder not in self._folders:
            self.fs.create_dir(folder, recursive=True)
            self._folders.add(folder)
        path = "/".join([*([folder] if folder else []), f"part-{uuid.uuid4()}.snappy.parquet"])
        values = {name: partition[name] for name in self.partition_by}
        if self.on_pool:
            self._pending.append(_POOL.submit(self._write, data, path, values))
        else:
            done: Future[AddAction] = Future()
            done.set_result(self._write(data, path, values))
            self._pending.append(done)
        self.rows_written += data.num_rows

    def wait(self) -> list[AddAction]:
        """Every file started so far, written; their add actions (all files so far)."""
        pending, self._pending = self._pending, []
        for future in pending:
            self.actions.append(future.result())
        return self.actions

    def _write(self, data: pa.Table, path: str, partition: dict[str, str]) -> AddAction:
        pq.write_table(
            data,
            path,
            filesystem=self.fs,
            compression="snappy",
            # Keys, amounts, times and unique strings are mostly distinct: encoding them
            # twice (dictionary, then plain) costs more than it saves.
            use_dictionary=dictionary_columns(data),
            row_group_size=self.row_group_rows,
        )
        size = self.fs.get_file_info(path).size
        return AddAction(
            path=path,
            size=int(size or 0),
            partition_values=partition,
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=file_stats(data, self.stats),
        )

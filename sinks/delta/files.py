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


def file_stats(rows: pa.Table, columns: Sequence[str], written: pq.FileMetaData) -> str:
    """The `stats` JSON of an add action holding `rows`, written as the Parquet file whose
    metadata is `written`.

    String bounds come from the statistics the Parquet writer computed anyway: comparing
    strings again cost as much as a fifth of writing the file.
    """
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
        if _is_text(dtype):
            bounds = _parquet_bounds(written, name)
            if bounds is None:
                continue
            least, most = (pa.scalar(value, dtype) for value in bounds)
        else:
            found = pc.min_max(column)
            least, most = found["min"], found["max"]
        low = _stat(least, dtype, upper=False)
        high = _stat(most, dtype, upper=True)
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


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def _parquet_bounds(written: pq.FileMetaData, name: str) -> tuple[str, str] | None:
    """The smallest and largest value of top-level string column `name` over the file's
    row groups, from the Parquet statistics (byte order, as Delta compares strings); None
    when a row group with values has none (the writer leaves out bounds it finds too long).
    """
    low: str | None = None
    high: str | None = None
    for index in range(written.num_row_groups):
        group = written.row_group(index)
        chunk = next(
            (
                group.column(j)
                for j in range(group.num_columns)
                if group.column(j).path_in_schema == name
            ),
            None,
        )
        stats = None if chunk is None else chunk.statistics
        if stats is not None and stats.has_null_count and stats.null_count == group.num_rows:
            continue  # only nulls here: no bound to take
        if stats is None or not stats.has_min_max:
            return None
        low = stats.min if low is None else min(low, stats.min)
        high = stats.max if high is None else max(high, stats.max)
    return None if low is None or high is None else (low, high)


DICTIONARY_SAMPLE = 10_000
"""Rows `dictionary_columns` looks at; a writer's first file of this many decides for all."""


def dictionary_columns(rows: pa.Table, sample: int = DICTIONARY_SAMPLE) -> list[str]:
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
        self._dictionary_columns: list[str] | None = None

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
        dictionary = self._dictionary(data)
        if self.on_pool:
            self._pending.append(_POOL.submit(self._write, data, path, values, dictionary))
        else:
            done: Future[AddAction] = Future()
            done.set_result(self._write(data, path, values, dictionary))
            self._pending.append(done)
        self.rows_written += data.num_rows

    def wait(self) -> list[AddAction]:
        """Every file started so far, written; their add actions (all files so far)."""
        pending, self._pending = self._pending, []
        for future in pending:
            self.actions.append(future.result())
        return self.actions

    def _dictionary(self, data: pa.Table) -> list[str]:
        """The columns to dictionary-encode in `data`'s file: the writer's files hold one
        table's rows, so the first one big enough to judge by decides for the others (a
        load writes hundreds of bucket files; judging each cost a tenth of writing it)."""
        if self._dictionary_columns is not None:
            return self._dictionary_columns
        chosen = dictionary_columns(data)
        if data.num_rows >= DICTIONARY_SAMPLE:
            self._dictionary_columns = chosen
        return chosen

    def _write(
        self, data: pa.Table, path: str, partition: dict[str, str], dictionary: list[str]
    ) -> AddAction:
        written: list[pq.FileMetaData] = []
        pq.write_table(
            data,
            path,
            filesystem=self.fs,
            compression="snappy",
            # Keys, amounts, times and unique strings are mostly distinct: encoding them
            # twice (dictionary, then plain) costs more than it saves.
            use_dictionary=dictionary,
            row_group_size=self.row_group_rows,
            metadata_collector=written,
        )
        size = self.fs.get_file_info(path).size
        return AddAction(
            path=path,
            size=int(size or 0),
            partition_values=partition,
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=file_stats(data, self.stats, written[0]),
        )

"""One merge-on-read table as the live and forensic writers use it.

An update or delete marks the old row deleted in a DV of the file that holds it and appends
the new row; nothing already written is rewritten. This class finds rows (`locate`, through
the key index), reads them (`read`, through the lake's bucket cache, whole files at a time)
and commits (`commit`: new files written by `FileWriter`, the DVs and the txn in one JSON
commit). A commit that loses to a compaction raises `DvConflict`; the layer writer's retry
loop calls `sync` (which brings the index up to date) and locates the rows again.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyroaring import BitMap64

from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.buckets import BucketCache
from tidemark.sinks.delta.dv.commit import DvTable, add_json
from tidemark.sinks.delta.dv.index import KeyIndex, locations, positions
from tidemark.sinks.delta.dv.log import Changes, FileEntry
from tidemark.sinks.delta.dv.select import SelectFailed, select_rows
from tidemark.sinks.delta.files import FileWriter, local_root, table_filesystem
from tidemark.sinks.delta.table import DeltaHandle
from tidemark.sinks.errors import SinkError, delta_errors

log = logging.getLogger(__name__)

WHOLE_FILE_ROWS = 65_536
"""Files of at most this many rows (a batch's own) are cached whenever a batch reads them."""
WANTED_SHARE = 8
"""A bigger file is cached when a batch wants at least 1/WANTED_SHARE of its rows."""
CHECKPOINT_EVERY = 25
"""Our JSON commits do not trigger delta-rs's checkpoints: we ask for one every so often."""
ROW_GROUP_ROWS = 65_536
"""Row groups of the files a merge-on-read commit writes: a lookup reads only those that
hold wanted rows."""
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tidemark-mor-read")


class MergeOnReadTable:
    """The DV state, key index and row reads of one merge-on-read Delta table.

    Args:
        handle: the layer's Delta table (created by the layer's first commit).
        scope: partition values of the files the index covers (forensic: the open
            versions, `_tm_current=true`); other files (history) are never located.
        cache: the lake's cache of file contents (shared with the bucket layers).
        cache_appends: keep what each commit appends in the cache (worth it where rows are
            read back: forensic).
    """

    def __init__(
        self,
        handle: DeltaHandle,
        *,
        scope: Mapping[str, str] | None = None,
        cache: BucketCache | None = None,
        cache_appends: bool = False,
    ) -> None:
        self.handle = handle
        self.scope = dict(scope or {})
        self.cache = cache if cache is not None else BucketCache()
        self._token = self.cache.layer()
        self._ids: dict[str, int] = {}
        self._numbers = itertools.count()
        self.cache_appends = cache_appends
        self.dv: DvTable | None = None
        self.index: KeyIndex | None = None
        self._footers: dict[str, tuple[list[int], pa.Schema]] = {}
        """Per file read by row number, where its row groups end and its Arrow schema, from
        its footer (read once: files never change)."""
        self._memo: tuple[pa.Table, pa.Table] | None = None
        """The last read: (path, row) of each row, and the rows."""
        self._commits = 0

    # -- state ---------------------------------------------------------------------------

    def ready(self, key_columns: Sequence[str]) -> DvTable:
        """The DV state and key index, built on first use and caught up with the log."""
        if self.dv is None:
            self.dv = DvTable(self.handle.uri, self.handle.storage_options)
            changes = None
        else:
            changes = self.dv.refresh()
        if self.index is None or self.index.key_columns != list(key_columns):
            self._build_index(key_columns)
        elif changes is not None:
            self._apply(changes)
        return self.dv

    def forget(self) -> None:
        """Drop the index and cached rows (rebuilt on next use)."""
        self.index = None
        self._memo = None
        self.cache.clear(self._token)
        self._ids.clear()
        self._footers.clear()

    def _in_scope(self, entry: FileEntry) -> bool:
        values = entry.partition_values
        return all(values.get(k) == v for k, v in self.scope.items())

    def _build_index(self, key_columns: Sequence[str]) -> None:
        assert self.dv is not None
        schema = self.handle.schema
        assert schema is not None
        self.index = KeyIndex(key_columns, schema)
        self.cache.clear(self._token)
        self._ids.clear()
        entries = [e for e in self.dv.state.files.values() if self._in_scope(e)]
        self._index_files(entries)
        log.info("indexed %s rows of %s (%s files)", len(self.index), self.handle.uri, len(entries))

    def _index_files(self, entries: Sequence[FileEntry]) -> None:
        assert self.dv is not None and self.index is not None
        if not entries:
            return
        deleted = self.dv.deleted_rows(entries)
        columns = self.index.key_columns
        tables = _POOL.map(lambda e: self._read_file(e, columns), entries)
        for entry, keys in zip(entries, tables, strict=True):
            self.index.add_file(entry.path, keys, deleted[entry.path])

    def _apply(self, changes: Changes) -> None:
        """Bring the index and cache in step with commits made by others."""
        assert self.dv is not None and self.index is not None
        for entry in changes.removed:
            self.index.drop_file(entry.path)
            self._uncache(entry.path)
        redeleted = [(b, a) for b, a in changes.redeleted if a.path in self.dv.state.files]
        if redeleted:
            before = self.dv.deleted_rows([b for b, _ in redeleted])
            after = self.dv.deleted_rows([a for _, a in redeleted])
            for old, new in redeleted:
                self.index.delete(new.path, after[new.path] - before[old.path])
        added = [e for e in changes.added if self._in_scope(e) and e.path in self.dv.state.files]
        self._index_files([e for e in added if e.path not in self.index.files()])

    # -- reading -------------------------------------------------------------------------

    def _read_file(self, entry: FileEntry, columns: Sequence[str] | None = None) -> pa.Table:
        """All rows of a data file, deleted ones included (row numbers are positions)."""
        assert self.handle.dt is not None
        fs = table_filesystem(self.handle.dt)
        with delta_errors(self.handle.uri):
            return pq.read_table(
                entry.local_path, filesystem=fs, columns=list(columns) if columns else None
            )

    def locate(self, keys: pa.Table) -> pa.Table:
        """Where the live rows of `keys` are: key columns, `path`, `row`."""
        assert self.index is not None
        return self.index.locate(keys)

    def read(self, found: pa.Table, schema: pa.Schema) -> pa.Table:
        """The rows `locate` found, laid out as `schema`.

        A file small enough for the cache, of which a batch wants many rows, is read whole
        and kept (the files a batch appends are cached as written). Of any other file only
        the wanted rows are decoded (`select.py`; row groups that hold some, where DuckDB
        cannot), and nothing is kept: keys spread over a big table must neither bring the
        table into memory nor decode it whole for a few rows of each file.
        """
        assert self.dv is not None
        remembered = self._remembered(found, schema)
        if remembered is not None:
            return remembered
        by_path = locations(found)
        wanted = {path: pa.array(by_path[path].to_array(), pa.int64()) for path in sorted(by_path)}
        got: dict[str, list[pa.Table]] = {}
        uncached: dict[str, pa.Array] = {}
        for path, rows in wanted.items():  # rows sorted
            cached = self.cache.get(self._token, self._id(path))
            entry = self.dv.state.files[path]
            if cached is None and self._worth_caching(entry, len(rows)):
                cached = self._read_file(entry)
                self.cache.put(self._token, self._id(path), cached)
            if cached is not None:
                got[path] = [cached.take(rows)]
            else:
                uncached[path] = rows
        got.update(self._read_some(uncached))
        parts = [_conform(part, schema) for path in wanted for part in got[path]]
        places = [
            pa.table({"path": pa.repeat(pa.scalar(path), len(rows)), "row": rows})
            for path, rows in wanted.items()
        ]
        if not parts:
            return schema.empty_table()
        result = pa.concat_tables(parts)
        self._memo = (pa.concat_tables(places), result)
        return result

    def _remembered(self, found: pa.Table, schema: pa.Schema) -> pa.Table | None:
        """The rows of `found` from the last read, if it held them all: the forensic commit
        closes the versions the batch's lookup has just read (a big table's files are not
        cached, and reading them twice doubled a commit's cost)."""
        if self._memo is None or found.num_rows == 0:
            return None
        places, rows = self._memo
        if rows.schema != schema:
            return None
        numbered = places.append_column("_tm_i", positions(0, places.num_rows))
        picked = found.select(["path", "row"]).join(numbered, ["path", "row"], join_type="inner")
        if picked.num_rows != found.num_rows:
            return None
        return rows.take(picked.column("_tm_i"))

    def _worth_caching(self, entry: FileEntry, wanted: int) -> bool:
        """Whether to read `entry` whole and keep it: it is small enough (decoded, a file
        takes several times its size on disk, a 1M-row file of 23 MB about 140 MB, and one
        must not push the whole cache out) and the batch wants a good part of it (keys
        spread over a big table want a few rows of each file, batch after batch: caching
        its files only cycles them through the cache)."""
        if int(entry.add.get("size") or 0) >= self.cache.max_bytes // 8:
            return False
        rows = entry.num_records
        return rows is None or rows <= WHOLE_FILE_ROWS or wanted * WANTED_SHARE >= rows

    def _read_some(self, wanted: Mapping[str, pa.Array]) -> dict[str, list[pa.Table]]:
        """`wanted[path]` rows of files that are not cached: only those rows decoded where
        the table is local (DuckDB), else the row groups that hold them."""
        assert self.dv is not None and self.handle.dt is not None
        files = self.dv.state.files
        root = local_root(self.handle.dt.table_uri)
        spread = {p: r for p, r in wanted.items() if root is not None and self._spread(p, r)}
        got: dict[str, list[pa.Table]] = {}
        if spread:
            assert root is not None
            named = {os.path.join(root, files[p].local_path): p for p in spread}
            try:
                found = select_rows(
                    {name: spread[path] for name, path in named.items()},
                    {name: self._footer(path)[1] for name, path in named.items()},
                )
                got = {named[name]: [rows] for name, rows in found.items()}
            except SelectFailed as exc:
                log.debug("%s: reading row groups instead (%s)", self.handle.uri, exc)
        for path, rows in wanted.items():
            if path not in got:
                got[path] = self._read_rows(files[path], rows)
        return got

    def _spread(self, path: str, rows: pa.Array) -> bool:
        """Whether `rows` fall in more than half of the file's row groups: then decoding
        the row groups that hold them decodes most of the file (keys spread over a big
        table), and DuckDB decodes only the rows. Rows in a few row groups (keys recently
        written, at a big file's end) are cheaper read by row group."""
        ends, _ = self._footer(path)
        numbers = rows.to_pylist()  # sorted
        touched = sum(
            1
            for begin, end in zip([0, *ends], ends, strict=False)
            if bisect.bisect_left(numbers, begin) < bisect.bisect_left(numbers, end)
        )
        return touched * 2 > len(ends)

    def _footer(self, path: str) -> tuple[list[int], pa.Schema]:
        """Where the file's row groups end, and its Arrow schema."""
        if path not in self._footers:
            assert self.dv is not None and self.handle.dt is not None
            fs = table_filesystem(self.handle.dt)
            local = self.dv.state.files[path].local_path
            with delta_errors(self.handle.uri), fs.open_input_file(local) as source:
                footer = pq.ParquetFile(source)  # its Arrow schema as pyarrow reads the file
                meta, schema = footer.metadata, footer.schema_arrow
            groups = (meta.row_group(g).num_rows for g in range(meta.num_row_groups))
            self._footers[path] = (list(itertools.accumulate(groups)), schema)
        return self._footers[path]

    def _read_rows(self, entry: FileEntry, rows: pa.Array) -> list[pa.Table]:
        """`rows` (sorted positions, int64) of a file, reading only the row groups that
        hold some of them."""
        assert self.handle.dt is not None
        fs = table_filesystem(self.handle.dt)
        out = []
        with delta_errors(self.handle.uri), fs.open_input_file(entry.local_path) as source:
            parquet = pq.ParquetFile(source)
            start = 0
            for group in range(parquet.metadata.num_row_groups):
                end = start + parquet.metadata.row_group(group).num_rows
                inside = pc.and_(
                    pc.greater_equal(rows, pa.scalar(start, pa.int64())),
                    pc.less(rows, pa.scalar(end, pa.int64())),
                )
                wanted = pc.subtract(rows.filter(inside), pa.scalar(start, pa.int64()))
                if len(wanted):
                    out.append(parquet.read_row_group(group).take(wanted))
                start = end
        if sum(part.num_rows for part in out) != len(rows):
            self.forget()  # rebuilt from the log on next use
            raise SinkError(
                f"the key index points past the end of `{entry.path}` in `{self.handle.uri}`",
                hint="transient: the index is rebuilt from the table's log; retry the batch",
                table=self.handle.uri,
            )
        return out

    def _id(self, path: str) -> int:
        """The cache key of `path`: never reused (a file removed from the table gives up its
        key, and `len(self._ids)` would hand a live file's key to the next new file)."""
        if path not in self._ids:
            self._ids[path] = next(self._numbers)
        return self._ids[path]

    def _uncache(self, path: str) -> None:
        self._footers.pop(path, None)
        number = self._ids.pop(path, None)
        if number is not None:
            self.cache.drop(self._token, [number])

    def live_rows(self) -> int:
        """Rows in scope not deleted (statistics minus DVs)."""
        assert self.index is not None
        return len(self.index)

    # -- writing -------------------------------------------------------------------------

    def commit(
        self,
        *,
        deletes: Mapping[str, BitMap64],
        appends: Sequence[tuple[Mapping[str, str], pa.Table]],
        batch_id: int,
        position: str | None,
        streams: Sequence[StreamCommit] = (),
    ) -> int:
        """Delete rows by DV and append `appends` (partition values, rows) in one commit
        stamped like every commit of the layer. Returns the rows appended.

        Raises:
            DvConflict: another commit changed or moved the files we delete from.
        """
        assert self.dv is not None and self.index is not None and self.handle.dt is not None
        writer = FileWriter(self.handle.dt, self.handle.partition_by, row_group_rows=ROW_GROUP_ROWS)
        written: list[tuple[Mapping[str, str], pa.Table]] = []
        for partition, rows in appends:
            if rows.num_rows:
                writer.write(rows, partition)
                written.append((partition, rows))
        actions = writer.wait()
        txns, info, marks = self.handle.stamps(batch_id, position, streams)
        ours = {mark.app: mark.batch_id for mark in marks}
        adds: list[dict[str, Any]] = [add_json(a) for a in actions]
        self._memo = None
        changes = self.dv.commit(deletes=deletes, adds=adds, txns=txns, info=info, batches=ours)
        try:  # in memory only; whatever fails after the commit landed, the index must follow
            self._after_commit(changes, actions, written)
        except BaseException:
            self.forget()  # rebuilt from the log on next use
            raise
        self.handle.record_commit(batch_id, marks)
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0:
            assert self.handle.dt is not None
            with delta_errors(self.handle.uri):
                self.handle.dt.create_checkpoint()
        return writer.rows_written

    def _after_commit(
        self,
        changes: Changes,
        actions: Sequence[Any],
        written: Sequence[tuple[Mapping[str, str], pa.Table]],
    ) -> None:
        """Index what we appended from memory and apply our DVs to the index."""
        assert self.dv is not None and self.index is not None
        ours = {a.path: rows for a, (_, rows) in zip(actions, written, strict=True)}
        for entry in changes.added:
            rows = ours.get(entry.path)
            if rows is None or not self._in_scope(entry):
                continue
            self.index.add_file(entry.path, rows.select(self.index.key_columns))
            if self.cache_appends:
                self.cache.put(self._token, self._id(entry.path), rows)
        changes.added = [e for e in changes.added if e.path not in ours]
        self._apply(changes)


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """`rows` with `schema`'s columns and types (a file older than a new column lacks it)."""
    columns = []
    for field in schema:
        if field.name in rows.column_names:
            column = rows.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.nulls(rows.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)

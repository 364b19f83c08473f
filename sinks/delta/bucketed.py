"""Shared machinery of the live and forensic writers: bucket replace with retries.

A commit reads the current rows of the buckets the batch touches (from the cache when hot),
computes their new content, and replaces exactly those buckets in one Delta commit
(`write_deltalake(mode="overwrite", predicate=...)`). Only the touched buckets' files are
removed and rewritten, so the cost follows the batch's key spread, not the table size.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa

from tidemark.kernel.columns import BUCKET, CURRENT, Layer
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import CommitResult, StreamCommit
from tidemark.sinks.delta.buckets import BucketCache, BucketRows, key_filter, split_by_bucket
from tidemark.sinks.delta.files import FileWriter
from tidemark.sinks.delta.mor import (
    COPY_ON_WRITE,
    MERGE_ON_READ,
    MergeOnRead,
    WriteMode,
    stored_mode,
)
from tidemark.sinks.delta.retry import commit_with_retries, table_version
from tidemark.sinks.delta.table import DeltaHandle
from tidemark.sinks.errors import SinkError
from tidemark.sinks.layout import Bucketing
from tidemark.sinks.schema import align

log = logging.getLogger(__name__)

PHYSICAL = (BUCKET, CURRENT)
GROUP_BUCKETS = 8
"""Buckets rebuilt and written together: a range bucket holds up to 16,384 keys."""


def with_bucket(table: pa.Table, bucketing: Bucketing, key_columns: Sequence[str]) -> pa.Table:
    """`table` plus (or with a fresh) `_tm_bucket` column."""
    if BUCKET in table.column_names:
        table = table.drop_columns([BUCKET])
    return table.append_column(BUCKET, bucketing.assign(table, key_columns))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` laid out exactly as `schema` (missing columns NULL)."""
    return align(table, schema, uri="<cache>")[0].select(schema.names)


class BucketedSink(ABC):
    """A layer stored as `_tm_bucket` partitions that each commit replaces wholesale."""

    layer: Layer
    partition_by: tuple[str, ...] = (BUCKET,)
    scope: tuple[tuple[str, str, str], ...] = ()
    """Partition filters of the rows a commit replaces (forensic: the open versions)."""
    history_values: tuple[tuple[str, str], ...] = ()
    """Partition values of the rows a commit appends beside them (forensic: history)."""
    mor_partition_by: tuple[str, ...] = ()
    """Partition columns in merge-on-read (no buckets: a batch appends one file)."""
    mor_scope: tuple[tuple[str, str], ...] = ()
    """Partition values of the rows merge-on-read locates (forensic: the open versions)."""
    mor_cache_appends = False

    def __init__(
        self,
        uri: str,
        *,
        app_id: str,
        storage_options: Mapping[str, str] | None = None,
        cache: BucketCache | None = None,
        range_size: int | None = None,
        write_mode: WriteMode = COPY_ON_WRITE,
    ) -> None:
        self.write_mode = write_mode
        self.mor: MergeOnRead | None = None
        self.handle = DeltaHandle(
            uri,
            app_id=app_id,
            storage_options=storage_options,
            partition_by=self.partition_by,
        )
        self.rows = BucketRows(self.handle, scope=self.scope, cache=cache)
        self.range_size = range_size
        self.bucketing: Bucketing | None = None
        self._staged: tuple[MilestonedTable, int, Sequence[StreamCommit]] | None = None
        self._seen: int | None = None  # the table version our cached rows are exact at
        self._use_mode(write_mode)

    def _use_mode(self, mode: WriteMode) -> None:
        """Write in `mode` from now on (a table keeps the mode it was created with)."""
        if mode == MERGE_ON_READ:
            self.handle.partition_by = list(self.mor_partition_by)
            if self.mor is None:
                self.mor = MergeOnRead(self, self.rows.cache)
        else:
            self.handle.partition_by = list(self.partition_by)
            self.mor = None

    def _adopt_stored_mode(self) -> None:
        stored = stored_mode(self.handle.description)
        if stored is not None and stored != self.write_mode:
            log.warning(
                "%s was created %s and stays so (configured: %s)",
                self.handle.uri,
                stored,
                self.write_mode,
            )
        self._use_mode(stored or self.write_mode)

    @property
    def scope_values(self) -> dict[str, str]:
        return {column: value for column, _, value in self.scope}

    def configuration(self, key_columns: Sequence[str]) -> dict[str, str]:
        """Delta table properties set when the table is created."""
        return {}

    def open(self) -> int:
        self.handle.open()
        self._adopt_stored_mode()
        self.bucketing = Bucketing.from_json(self.handle.description)
        return self.handle.applied_batch()

    def close(self) -> None:
        self.rows.clear()
        if self.mor is not None:
            self.mor.table.forget()
        self._staged = None

    def write(
        self, batch: MilestonedTable, *, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> None:
        self._staged = (batch, batch_id, streams)

    @property
    def merge_on_read(self) -> bool:
        """Whether this layer is written merge-on-read (configured, or as the table was
        created): no key buckets, replaced rows marked in deletion vectors."""
        return self.mor is not None

    @property
    def shares_buckets(self) -> bool:
        """True unless the buckets follow one Kafka partition each (then each has one writer)."""
        return self.bucketing is None or self.bucketing.kind != "partition"

    def refresh(self) -> None:
        """Catch up with other writers. Where they may write the buckets we do, a commit by
        anyone else makes our cached rows stale: they are dropped (re-read on demand)."""
        self.handle.refresh()
        version = table_version(self.handle)
        if version != self._seen and self.shares_buckets:
            self.rows.clear()
        self._seen = version

    def ensure_bucketing(self, schema: pa.Schema, key_columns: Sequence[str]) -> Bucketing:
        if self.bucketing is None:
            extra = {"range_size": self.range_size} if self.range_size else {}
            self.bucketing = Bucketing.for_keys(schema, key_columns, **extra)
        return self.bucketing

    def commit(self) -> CommitResult:
        if self._staged is None:
            raise SinkError("commit without write", table=self.handle.uri)
        batch, batch_id, streams = self._staged

        def forget_rows_if_others_wrote(base: int | None) -> None:
            if not self.handle.only_maintenance_since(base):
                self.rows.clear()  # someone changed rows: re-read what we touch

        result = commit_with_retries(
            self.handle,
            layer=self.layer,
            batch_id=streams[0].batch_id if streams else batch_id,
            attempt=lambda: self._commit_once(batch, batch_id, streams),
            on_conflict=forget_rows_if_others_wrote,
            app_id=streams[0].app if streams else None,
        )
        self._seen = table_version(self.handle)
        self._staged = None  # kept on failure, so the caller may retry the same batch
        return result

    def _commit_once(
        self, batch: MilestonedTable, batch_id: int, streams: Sequence[StreamCommit]
    ) -> int:
        keys = batch.key_columns
        if self.handle.dt is None:
            # Another worker may have created the table since we opened: adopt its layout.
            self.handle.refresh()
            if self.handle.dt is not None:
                self._adopt_stored_mode()
            stored = Bucketing.from_json(self.handle.description)
            if stored is not None and stored != self.bucketing:  # equal: keep our pins
                self.bucketing = stored
        if self.mor is not None:
            return self.mor.commit(batch, batch_id, streams)
        new_rows, touched = self.stage(batch, batch_id, streams)
        bucketing = self.ensure_bucketing(new_rows.schema, keys)
        new_rows = with_bucket(new_rows, bucketing, keys)
        touched = with_bucket(touched, bucketing, keys)
        fitted, evolves = self.handle.fit(new_rows)
        buckets = sorted(set(touched.column(BUCKET).to_pylist()))
        if self.handle.dt is not None and buckets and not evolves:
            return self._replace_buckets(buckets, fitted, touched, batch, batch_id, streams)
        current = self.rows.get(buckets)
        empty = fitted.slice(0, 0)
        content, extra = self.rebuild(
            {b: conform(current.get(b, empty), fitted.schema) for b in buckets},
            fitted,
            touched,
            batch,
        )
        pieces = [*content.values(), extra]
        data = pa.concat_tables(pieces) if pieces else fitted.slice(0, 0)
        before = table_version(self.handle)
        if self.handle.dt is None:
            self.handle.configuration = self.configuration(keys)
        if self.handle.dt is None or not buckets:
            # First commit creates the table; an empty batch still records txn and position.
            self.handle.commit(
                data,
                batch_id=batch_id,
                position=batch.last_position,
                description=bucketing.to_json(keys),
                streams=streams,
            )
        else:
            self.handle.commit(
                data,
                batch_id=batch_id,
                position=batch.last_position,
                mode="overwrite",
                predicate=self.predicate(buckets, batch_id),
                evolves=evolves,
                streams=streams,
            )
        after = table_version(self.handle)
        if before is None and after != 0:
            # We meant to create the table, but another writer did first and our rows were
            # appended beside its: a bucket we wrote may hold their rows in other files.
            self.rows.clear()
            return int(data.num_rows)
        if before is not None and after is not None and after != before + 1:
            # Another writer committed in between (delta-rs rebased us): only the buckets
            # we just wrote are known to be exact.
            self.rows.clear()
        for bucket, rows in content.items():
            self.rows.put(bucket, rows)
        return int(data.num_rows)

    def _replace_buckets(
        self,
        buckets: list[int],
        new_rows: pa.Table,
        touched: pa.Table,
        batch: MilestonedTable,
        batch_id: int,
        streams: Sequence[StreamCommit] = (),
    ) -> int:
        """Rebuild and write the touched buckets a group at a time, then commit the files.

        Memory holds one group plus what the cache may keep, however many buckets the
        batch touches: keys spread evenly over a big table touch all of them.
        """
        assert self.handle.dt is not None
        writer = FileWriter(self.handle.dt, self.partition_by)
        added, hit = split_by_bucket(new_rows), split_by_bucket(touched)
        no_rows, no_keys = new_rows.slice(0, 0), touched.slice(0, 0)
        cache = self.rows.cache
        keep: dict[int, pa.Table] = {}  # new content the cache takes after the commit
        kept_bytes = 0
        before = table_version(self.handle)
        for start in range(0, len(buckets), GROUP_BUCKETS):
            group = buckets[start : start + GROUP_BUCKETS]
            current = self.rows.get(group, remember=False)
            self.rows.drop(group)  # replaced below; readers meanwhile go to storage
            content, extra = self.rebuild(
                {b: conform(current.pop(b, no_rows), new_rows.schema) for b in group},
                pa.concat_tables([added.get(b, no_rows) for b in group]),
                pa.concat_tables([hit.get(b, no_keys) for b in group]),
                batch,
            )
            for bucket, rows in content.items():
                writer.write(rows, {**self.scope_values, BUCKET: str(bucket)})
                if cache.nbytes + kept_bytes + rows.nbytes <= cache.max_bytes:
                    keep[bucket] = rows
                    kept_bytes += rows.nbytes
            for bucket, rows in split_by_bucket(extra).items():
                writer.write(rows, {**dict(self.history_values), BUCKET: str(bucket)})
            writer.wait()  # one group in memory at a time
        self.handle.replace_files(
            writer.wait(),
            partitions=[(BUCKET, "in", [str(b) for b in buckets]), *self.scope],
            batch_id=batch_id,
            position=batch.last_position,
            streams=streams,
        )
        first = streams[0] if streams else None
        ours = first.batch_id if first else batch_id
        app = first.app if first else None
        if not self.handle.only_maintenance_since(before, ours=ours, app_id=app):
            self.rows.clear()  # another writer changed rows meanwhile: see `_commit_once`
            return writer.rows_written
        for bucket, rows in keep.items():
            self.rows.put(bucket, rows)
        return writer.rows_written

    def lookup(self, keys: pa.Table, key_columns: Sequence[str]) -> pa.Table | None:
        """The stored (live) or open (forensic) rows of `keys`, None if the table is absent.

        Reads only the buckets the keys fall in, through the cache, a group at a time: keys
        spread over a whole big table must not bring the whole table into memory at once.
        """
        if self.mor is not None:
            return self.mor.lookup(keys, key_columns)
        if self.handle.dt is None or self.bucketing is None or keys.num_rows == 0:
            return None
        keyed = keys.select(list(key_columns))
        by_bucket = split_by_bucket(
            keyed.append_column(BUCKET, self.bucketing.assign(keyed, key_columns))
        )
        buckets = sorted(by_bucket)
        found = []
        for start in range(0, len(buckets), GROUP_BUCKETS):
            group = buckets[start : start + GROUP_BUCKETS]
            parts = [rows for rows in self.rows.get(group).values() if rows.num_rows]
            if parts:
                rows = pa.concat_tables(parts, promote_options="permissive")
                wanted = pa.concat_tables([by_bucket[b] for b in group]).select(keyed.column_names)
                found.append(key_filter(rows, wanted, key_columns, keep=True))
        if not found:
            return None
        rows = pa.concat_tables(found, promote_options="permissive")
        return rows.drop_columns([c for c in PHYSICAL if c in rows.column_names])

    @abstractmethod
    def stage(
        self, batch: MilestonedTable, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> tuple[pa.Table, pa.Table]:
        """(rows the batch adds, key rows of every key the batch touches)."""

    @abstractmethod
    def rebuild(
        self,
        current: dict[int, pa.Table],
        new_rows: pa.Table,
        touched: pa.Table,
        batch: MilestonedTable,
    ) -> tuple[dict[int, pa.Table], pa.Table]:
        """(new content of each touched bucket's cached part, rows appended outside it)."""

    @abstractmethod
    def predicate(self, buckets: Sequence[int], batch_id: int) -> str:
        """The Delta predicate selecting the rows this commit replaces."""

    @abstractmethod
    def mor_replaced(self, batch: MilestonedTable, touched: pa.Table) -> pa.Table:
        """Merge-on-read: the keys whose stored row (version) the batch deletes (`touched`
        is `stage`'s second answer)."""

    @abstractmethod
    def mor_appends(
        self, new_rows: pa.Table, replaced: Callable[[], pa.Table], batch: MilestonedTable
    ) -> list[tuple[dict[str, str], pa.Table]]:
        """Merge-on-read: the rows to append, per partition (`replaced()` reads the rows
        `mor_replaced` located, for forensic's closed versions)."""

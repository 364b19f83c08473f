"""The merge-on-read write mode of the live and forensic layers (docs/sinks.md).

Copy-on-write replaces every touched bucket whole; with keys spread over a big table every
batch rewrites nearly all of it. Merge-on-read rewrites nothing: an update or delete marks
the old row deleted in a deletion vector of the file that holds it and appends the new row
(forensic: the closed version is appended to history and the open one DV-deleted). Each
commit still carries the layer's txn and position, so exactly-once and the replay guard are
the same in both modes.

Layout: live unpartitioned, forensic partitioned by `_tm_current` (open versions apart from
history); no `_tm_bucket`. The mode is fixed when the table is created and stored in its
description (`{"tidemark_layout": "merge_on_read"}`), like the bucketing of copy-on-write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
from deltalake import Schema

from tidemark.kernel.columns import BUCKET, CURRENT
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.buckets import BucketCache
from tidemark.sinks.delta.dv.commit import enable_deletion_vectors
from tidemark.sinks.delta.dv.index import locations
from tidemark.sinks.delta.dv.layer import MergeOnReadTable
from tidemark.sinks.errors import delta_errors

if TYPE_CHECKING:
    from tidemark.sinks.delta.bucketed import BucketedSink

WriteMode = Literal["copy_on_write", "merge_on_read"]
COPY_ON_WRITE: WriteMode = "copy_on_write"
MERGE_ON_READ: WriteMode = "merge_on_read"
LAYOUT_KEY = "tidemark_layout"


def layout_json() -> str:
    """The table description of a merge-on-read table."""
    return json.dumps({LAYOUT_KEY: MERGE_ON_READ})


def stored_mode(description: str | None) -> WriteMode | None:
    """The mode a table was created with (None: not created by Tidemark's writers)."""
    try:
        data = json.loads(description or "")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get(LAYOUT_KEY) == MERGE_ON_READ:
        return MERGE_ON_READ
    return COPY_ON_WRITE if "tidemark_bucketing" in data else None


class MergeOnRead:
    """The merge-on-read commit and lookup of one live or forensic writer.

    Args:
        sink: the layer writer (it says which keys a batch replaces and what it appends).
        cache: the lake's shared cache.
    """

    def __init__(self, sink: BucketedSink, cache: BucketCache) -> None:
        self.sink = sink
        self.handle = sink.handle
        self.table = MergeOnReadTable(
            sink.handle,
            scope=dict(sink.mor_scope),
            cache=cache,
            cache_appends=sink.mor_cache_appends,
        )

    @property
    def physical(self) -> tuple[str, ...]:
        return tuple(self.handle.partition_by)

    def row_schema(self) -> pa.Schema:
        """The table's columns as a data file holds them (no partition columns)."""
        schema = self.handle.schema
        assert schema is not None
        return pa.schema([f for f in schema if f.name not in self.handle.partition_by])

    def commit(
        self, batch: MilestonedTable, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> int:
        """Apply one batch: DVs for the rows it replaces, its new rows appended."""
        keys = batch.key_columns
        new_rows, touched = self.sink.stage(batch, batch_id, streams)
        fitted, evolves = self.handle.fit(new_rows)
        if self.handle.dt is None:
            return self._create(fitted, batch, batch_id, streams)
        if evolves:
            self._evolve(fitted.schema)
        table = self.table.ready(keys)
        app, version = (streams[0].app, streams[0].batch_id) if streams else (None, batch_id)
        if table.state.txns.get(app or self.handle.app_id, 0) >= version:
            # Our commit of this batch landed but the attempt failed after it (say delta-rs
            # could not catch up): the log is the truth, never commit it twice.
            self.handle.record_commit(batch_id, [])
            return 0
        enable_deletion_vectors(table)
        found = self.table.locate(self.sink.mor_replaced(batch, touched))
        appends = self.sink.mor_appends(
            fitted, lambda: self.table.read(found, self.row_schema()), batch
        )
        return self.table.commit(
            deletes=locations(found),
            appends=appends,
            batch_id=batch_id,
            position=batch.last_position,
            streams=streams,
        )

    def lookup(self, keys: pa.Table, key_columns: Sequence[str]) -> pa.Table | None:
        """The stored rows (live) or open versions (forensic) of `keys`."""
        if self.handle.dt is None or keys.num_rows == 0:
            return None
        self.table.ready(key_columns)
        rows = self.table.read(self.table.locate(keys), self.row_schema())
        drop = [c for c in (BUCKET, CURRENT) if c in rows.column_names]
        return rows.drop_columns(drop) if drop else rows

    def _create(
        self,
        data: pa.Table,
        batch: MilestonedTable,
        batch_id: int,
        streams: Sequence[StreamCommit] = (),
    ) -> int:
        """The table's first commit (delta-rs creates it), then DVs are switched on."""
        appends = self.sink.mor_appends(data, lambda: data.slice(0, 0), batch)
        parts = [_with_partition(rows, values) for values, rows in appends if rows.num_rows]
        rows = pa.concat_tables(parts) if parts else _with_partition(data.slice(0, 0), {})
        self.handle.configuration = self.sink.configuration(batch.key_columns)
        self.handle.commit(
            rows,
            batch_id=batch_id,
            position=batch.last_position,
            description=layout_json(),
            streams=streams,
        )
        enable_deletion_vectors(self.table.ready(batch.key_columns))
        return int(rows.num_rows)

    def _evolve(self, schema: pa.Schema) -> None:
        """Add the batch's new columns to the table (older rows read NULL)."""
        current = self.handle.schema
        assert current is not None and self.handle.dt is not None
        new = [f for f in schema if f.name not in current.names]
        fields = Schema.from_arrow(pa.schema(new)).fields
        with delta_errors(self.handle.uri):
            self.handle.dt.alter.add_columns(fields)
            self.handle.dt.update_incremental()


def _with_partition(rows: pa.Table, values: Mapping[str, str]) -> pa.Table:
    """`rows` with the partition columns of `values` as data (for delta-rs's first write)."""
    for name, value in values.items():
        if name in rows.column_names:
            rows = rows.drop_columns([name])
        rows = rows.append_column(name, pa.repeat(value == "true", rows.num_rows))
    return rows

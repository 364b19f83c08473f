"""Bulk files for a table the lake does not hold yet: the loader's fast path into the layers.

A table the lake holds no rows of (first start, a table added to the config) needs no
lookup and no bucket rewrite: every loaded row is a new key. Its milestoned rows (the core
runs on each block of snapshot rows, so the layers get exactly what a Debezium snapshot
would give them) are written as Parquet files laid out as the layer writers lay them out
(`_tm_bucket` partitions, `_tm_current` for forensic; a merge-on-read layer without key
buckets, in row groups its lookups read one at a time; `sinks/delta/files.py`) and committed
range by range: one commit per layer per range, stamped with the range's own Delta txn
(`<layer app>:load:<load id>:<range>`), so a load resumed after a crash knows which ranges
each layer already holds. Nothing moves a layer's replay-guard watermark until the
hand-over (`finish`), which records the load's batch and position in every layer and the
batch log, exactly as a batch does.

Memory: a range's rows are buffered up to `flush_bytes` per layer, then written (one file
per bucket), so a range touching few buckets (keys that follow the table's physical order,
the common case) makes few, large files.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, Transaction, write_deltalake
from deltalake.transaction import AddAction

from tidemark.kernel.columns import (
    BATCH,
    BUCKET,
    CURRENT,
    INGESTED_AT,
    VALID_TO,
    Layer,
    is_metadata,
)
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.batch_log import TableCounts
from tidemark.sinks.delta.bucketed import BucketedSink
from tidemark.sinks.delta.buckets import split_by_bucket
from tidemark.sinks.delta.dv.layer import ROW_GROUP_ROWS
from tidemark.sinks.delta.files import FileWriter
from tidemark.sinks.delta.forensic import ForensicSink
from tidemark.sinks.delta.mor import layout_json
from tidemark.sinks.delta.table import APP_KEY, BATCH_KEY, POSITION_KEY, DeltaHandle
from tidemark.sinks.delta.watermarks import position_transactions
from tidemark.sinks.errors import delta_errors
from tidemark.sinks.lake import Lake
from tidemark.sinks.layout import Bucketing
from tidemark.sinks.schema import all_nullable

log = logging.getLogger(__name__)

FLUSH_BYTES = 64 << 20
_ORDER = (Layer.CHANGELOG, Layer.LIVE, Layer.FORENSIC)


def _rows_for(layer: Layer, batch: MilestonedTable) -> pa.Table:
    if layer is Layer.CHANGELOG:
        return batch.changelog
    if layer is Layer.LIVE:
        return batch.live_upserts
    inserts = batch.forensic_inserts
    return inserts.append_column(CURRENT, pc.is_null(inserts.column(VALID_TO)))


class BulkTable:
    """The layers of one table being loaded in bulk.

    Args:
        lake: the lake (its layer writers are reopened by `finish`).
        table: the lake table name.
        layers: the layers the table is kept in.
        key_columns: the table's key (`_tm_row` for a table without one).
        load_id: the load (names each range's txn).
    """

    def __init__(
        self,
        lake: Lake,
        table: str,
        *,
        layers: frozenset[Layer],
        key_columns: Sequence[str],
        load_id: str,
    ) -> None:
        self.lake = lake
        self.table = table
        self.layers = [layer for layer in _ORDER if layer in layers]
        self.key_columns = tuple(key_columns)
        self.load_id = load_id
        self._locks = {layer: threading.Lock() for layer in self.layers}
        self._handles: dict[Layer, DeltaHandle] = {}
        self._mor: dict[Layer, bool] = {}
        self.bucketing: Bucketing | None = None

    # -- tables ------------------------------------------------------------------------
    def handle(self, layer: Layer) -> DeltaHandle:
        """The layer's Delta table, as the lake's writer of it names it (opened here)."""
        if layer not in self._handles:
            sink = self.lake.sink(self.table, layer)
            own = sink.handle
            handle = DeltaHandle(
                own.uri,
                app_id=own.app_id,
                storage_options=own.storage_options,
                partition_by=own.partition_by,
            )
            handle.open()
            self._handles[layer] = handle
        return self._handles[layer]

    def merge_on_read(self, layer: Layer) -> bool:
        """Whether `layer` is written merge-on-read (as its writer writes it: configured, or
        as the table was created). Its files then have no key buckets; the stream's first
        commit after the hand-over switches deletion vectors on (`sinks/delta/mor.py`)."""
        if layer not in self._mor:
            sink = self.lake.sink(self.table, layer)
            self._mor[layer] = isinstance(sink, BucketedSink) and sink.merge_on_read
        return self._mor[layer]

    def version(self, layer: Layer) -> int | None:
        """The layer's newest version (None before its first commit)."""
        handle = self.handle(layer)
        handle.refresh()
        return None if handle.dt is None else handle.dt.version()

    def range_app(self, layer: Layer, index: int) -> str:
        return f"{self.handle(layer).app_id}:load:{self.load_id}:{index}"

    def holds(self, layer: Layer, index: int) -> bool:
        """Whether `layer` holds range `index` of this load."""
        handle = self.handle(layer)
        handle.refresh()
        return handle.dt is not None and handle.applied_batch(self.range_app(layer, index)) > 0

    def missing(self, index: int) -> list[Layer]:
        """The layers that lack range `index`."""
        return [layer for layer in self.layers if not self.holds(layer, index)]

    def create(self, sample: MilestonedTable, range_size: int | None = None) -> None:
        """Create every layer that does not exist yet, laid out as its writer would lay it out.

        Raises:
            SinkError: storage failed.
        """
        sample = all_nullable(self.lake.with_generation(sample))
        live_rows = _rows_for(Layer.LIVE, sample)
        for layer in self.layers:
            handle = self.handle(layer)
            if layer is not Layer.CHANGELOG:  # the layout stored with the table, else a new one
                self.ensure_bucketing(live_rows.schema, range_size)
            if handle.dt is not None:
                continue
            rows = _rows_for(layer, sample).slice(0, 0)
            partition_by: list[str] = []
            description = None
            configuration: dict[str, str] = {}
            if layer is not Layer.CHANGELOG:
                partition_by = list(handle.partition_by)  # as the layer's writer lays it out
                if self.merge_on_read(layer):
                    description = layout_json()
                else:
                    bucketing = self.ensure_bucketing(rows.schema, range_size)
                    rows = rows.append_column(BUCKET, pa.array([], pa.int64()))
                    description = bucketing.to_json(self.key_columns)  # as the writers store it
                if layer is Layer.FORENSIC:
                    writer = self.lake.sink(self.table, layer)
                    assert isinstance(writer, ForensicSink)
                    configuration = writer.configuration(self.key_columns)
            with delta_errors(handle.uri):
                write_deltalake(
                    handle.uri,
                    rows,
                    mode="append",
                    partition_by=partition_by or None,
                    configuration=configuration or None,
                    description=description,
                    storage_options=handle.storage_options or None,
                )
            handle.open()

    def ensure_bucketing(self, schema: pa.Schema, range_size: int | None) -> Bucketing:
        if self.bucketing is None:
            stored = None
            for layer in (Layer.LIVE, Layer.FORENSIC):
                if layer in self.layers and self.handle(layer).dt is not None:
                    stored = Bucketing.from_json(self.handle(layer).description)
            extra = {"range_size": range_size} if range_size else {}
            self.bucketing = stored or Bucketing.for_keys(schema, self.key_columns, **extra)
        return self.bucketing

    # -- ranges ------------------------------------------------------------------------
    def writer(
        self, index: int, batch_id: int, layers: Sequence[Layer] | None = None
    ) -> RangeWriter:
        """A writer of range `index` into `layers` (default all of the table's)."""
        return RangeWriter(self, index, batch_id, list(layers or self.layers))

    def commit_files(
        self, layer: Layer, index: int, batch_id: int, actions: list[AddAction]
    ) -> None:
        """Commit a range's files to one layer, with the range's txn."""
        handle = self.handle(layer)
        app = self.range_app(layer, index)
        props = CommitProperties(
            app_transactions=[Transaction(app, 1)],
            custom_metadata={APP_KEY: app, BATCH_KEY: str(batch_id)},
        )
        with self._locks[layer]:
            handle.refresh()
            assert handle.dt is not None
            if handle.applied_batch(app) > 0:
                return  # this range landed before (a retry)
            with delta_errors(handle.uri, batch_id=batch_id):
                handle.dt.create_write_transaction(
                    [*actions],
                    "append",
                    handle.dt.schema(),
                    partition_by=handle.partition_by or None,
                    commit_properties=props,
                )

    def changelog_rows(self, batch_id: int) -> pa.Table:
        """The changelog rows one range committed (to fill layers a crash left without it)."""
        handle = self.handle(Layer.CHANGELOG)
        handle.refresh()
        assert handle.dt is not None
        return handle.read(ds.field(BATCH) == batch_id)

    # -- the hand-over -----------------------------------------------------------------
    def finish(
        self,
        *,
        batch_id: int,
        position: str,
        source: str,
        counts: TableCounts,
        started_at: datetime,
    ) -> None:
        """Hand the table over: every layer gets the load's watermark, the batch log a row.

        Only the watermark is recorded in the layers, not a batch of the layer writer's own
        (that txn is left to the streamed batches), so nothing that restores layers to the
        batch log's last batch can mistake a finished load for a batch half-written.
        """
        for layer in self.layers:
            handle = self.handle(layer)
            handle.refresh()
            assert handle.dt is not None
            if (handle.applied_position() or "") >= position:
                continue  # handed over before (a retry)
            props = CommitProperties(
                app_transactions=position_transactions(handle.app_id, position),
                custom_metadata={
                    APP_KEY: f"{handle.app_id}:load:{self.load_id}",
                    BATCH_KEY: str(batch_id),
                    POSITION_KEY: position,
                },
            )
            with delta_errors(handle.uri, batch_id=batch_id):
                handle.dt.create_write_transaction(
                    [],
                    "append",
                    handle.dt.schema(),
                    partition_by=handle.partition_by or None,
                    commit_properties=props,
                )
        self.lake.batch_log.append(
            batch_id,
            source_positions={},  # not a stream position: the decoder must not start there
            counts=[counts],
            started_at=started_at,
            closed_by="load",
        )
        self.lake.reload(self.table)

    def holds_rows(self) -> bool:
        """Whether any layer of the table holds a row (read from the Delta log only)."""
        for layer in self.layers:
            handle = self.handle(layer)
            handle.refresh()
            if handle.dt is not None and handle.dt.file_uris():
                return True
        return False

    def open_rows(self, columns: Sequence[str] | None = None) -> pa.Table | None:
        """The rows the lake holds as current (live, else forensic's open versions): the
        `columns` asked for (default the key), None when the table has no such layer."""
        wanted = list(columns or self.key_columns)
        for layer in (Layer.LIVE, Layer.FORENSIC):
            if layer not in self.layers:
                continue
            handle = self.handle(layer)
            handle.refresh()
            if handle.dt is None:
                return None
            where = ds.field(CURRENT) == True if layer is Layer.FORENSIC else None  # noqa: E712
            rows = handle.read(where)
            return rows.select([c for c in wanted if c in rows.column_names])
        return None

    def row_schema(self) -> pa.Schema | None:
        """The source columns as the lake's live (or forensic) layer holds them."""
        for layer in (Layer.LIVE, Layer.FORENSIC):
            if layer in self.layers and (schema := self.handle(layer).schema) is not None:
                return pa.schema([f for f in schema if not is_metadata(f.name)])
        return None


class RangeWriter:
    """Buffers one range's milestoned rows per layer and writes them as files; `commit`
    makes them visible, layer by layer (changelog first, forensic last)."""

    def __init__(self, bulk: BulkTable, index: int, batch_id: int, layers: list[Layer]) -> None:
        self.bulk = bulk
        self.index = index
        self.batch_id = batch_id
        self.layers = layers
        self._parts: dict[Layer, list[pa.Table]] = {layer: [] for layer in layers}
        self._bytes: dict[Layer, int] = dict.fromkeys(layers, 0)
        self._writers: dict[Layer, FileWriter] = {}
        self.rows = 0

    def add(self, batch: MilestonedTable, *, flush_bytes: int = FLUSH_BYTES) -> None:
        """Take one block's milestoned rows (forensic's stamped with the table's generation,
        as the layer writers stamp them)."""
        batch = all_nullable(self.bulk.lake.with_generation(batch))
        self.rows += batch.changelog.num_rows
        for layer in self.layers:
            rows = _rows_for(layer, batch)
            if rows.num_rows == 0:
                continue
            self._parts[layer].append(rows)
            self._bytes[layer] += rows.nbytes
            if self._bytes[layer] >= flush_bytes:
                self._flush(layer)

    def _writer(self, layer: Layer) -> FileWriter:
        if layer not in self._writers:
            handle = self.bulk.handle(layer)
            assert handle.dt is not None
            groups = ROW_GROUP_ROWS if self.bulk.merge_on_read(layer) else None
            self._writers[layer] = FileWriter(handle.dt, handle.partition_by, row_group_rows=groups)
        return self._writers[layer]

    def _flush(self, layer: Layer) -> None:
        parts, self._parts[layer] = self._parts[layer], []
        self._bytes[layer] = 0
        if not parts:
            return
        rows = pa.concat_tables(parts, promote_options="permissive")
        writer = self._writer(layer)
        if layer is Layer.CHANGELOG or (layer is Layer.LIVE and self.bulk.merge_on_read(layer)):
            writer.write(rows, {})
            return
        if self.bulk.merge_on_read(layer):  # forensic: open versions apart, no key buckets
            for current, part in _by_current(rows):
                writer.write(part, {CURRENT: str(current).lower()})
            return
        bucketing = self.bulk.bucketing
        assert bucketing is not None
        keyed = rows.append_column(BUCKET, bucketing.assign(rows, self.bulk.key_columns))
        if layer is Layer.LIVE:
            for bucket, piece in split_by_bucket(keyed).items():
                writer.write(piece, {BUCKET: str(bucket)})
            return
        for current, part in _by_current(keyed):
            for bucket, piece in split_by_bucket(part).items():
                writer.write(piece, {CURRENT: str(current).lower(), BUCKET: str(bucket)})

    def commit(self) -> None:
        """Write what is buffered and commit each layer's files (changelog first)."""
        for layer in self.layers:
            self._flush(layer)
            actions = self._writer(layer).wait() if layer in self._writers else []
            self.bulk.commit_files(layer, self.index, self.batch_id, list(actions))


def _by_current(rows: pa.Table) -> list[tuple[bool, pa.Table]]:
    """Forensic rows split into open and closed versions: a load's are all open, and
    are not copied (filtering copied every row of the layer)."""
    current = rows.column(CURRENT)
    if pc.all(current, skip_nulls=False).as_py():
        return [(True, rows)]
    return [(flag, rows.filter(pc.equal(current, flag))) for flag in (True, False)]


def without_batch(rows: pa.Table) -> pa.Table:
    """Changelog rows back as the events they were (the sinks' columns dropped)."""
    return rows.drop_columns([c for c in (BATCH, INGESTED_AT) if c in rows.column_names])

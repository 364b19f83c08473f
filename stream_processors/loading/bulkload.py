"""The bulk path of a load: ranges of a table the lake held nothing of, as files.

Each block a worker reads becomes snapshot events at the load's first point, the core
milestones them (no open versions: every key is new), and the range's writer buffers the
layer rows and commits them range by range (`sinks/bulk.py`). On a resume, the ranges every
layer holds are kept; a range some layers hold (a crash between its layer commits) is given
to the others from its changelog rows, without reading the source; the rest are read again,
taking only the rows unchanged since the first snapshot (`where`), which are as of the first
point whatever snapshot reads them.

A table without a key is one range, milestoned whole: identical rows must be counted
together (it is held in memory while it loads).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa

from tidemark.connectors.postgres.copyread import ReadTable, TableReader
from tidemark.connectors.postgres.exported import ExportedSnapshot, SnapshotPoint, taken_at
from tidemark.connectors.postgres.loader import RateLimit, ReadProgress, read_ranges
from tidemark.connectors.postgres.ranges import Range
from tidemark.kernel.columns import ROW, Layer
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.sinks.bulk import BulkTable, RangeWriter, without_batch
from tidemark.sinks.loads import LoadState
from tidemark.stream_processors.loading.events import snapshot_events
from tidemark.stream_processors.milestoning.core import milestone
from tidemark.stream_processors.milestoning.first import first_versions

log = logging.getLogger(__name__)


def load_bulk(
    *,
    state: LoadState,
    reader: TableReader,
    snapshot: ExportedSnapshot,
    bulk: BulkTable,
    first: SnapshotPoint,
    span: int,
    resumed: bool,
    workers: int,
    limit: RateLimit,
    stop: threading.Event,
    progress: ReadProgress,
    on_block: Callable[[ReadTable], None],
    where: str | None,
    range_size: int | None,
    flush_bytes: int,
) -> tuple[int, int]:
    """Read and write the ranges `bulk`'s layers lack; (ranges read, ranges kept)."""
    table, keys = reader.table, reader.key_columns
    ranges = [Range(i, w) for i, w in enumerate(state.ranges)]
    when = taken_at(first)
    seqs: dict[int, int] = {}
    lock = threading.Lock()

    def milestoned(item: Range, rows: pa.Table) -> MilestonedTable:
        with lock:
            first_seq = item.index * span + seqs.get(item.index, 0)
            seqs[item.index] = seqs.get(item.index, 0) + rows.num_rows
        changes = snapshot_events(
            table, rows, key_columns=keys, point=first, first_seq=first_seq, source_ts=when
        )
        batch_id, now = state.range_batch(item.index), datetime.now(UTC)
        if keys:  # unique keys, none in the lake: every row is its key's first version
            return first_versions(changes, batch_id=batch_id, ingested_at=now)
        return milestone(changes, None, batch_id=batch_id, ingested_at=now)

    bulk.create(milestoned(Range(0, ""), reader.arrow_schema.empty_table()), range_size)
    todo: list[Range] = []
    kept = 0
    for item in ranges:
        missing = bulk.missing(item.index) if resumed else list(bulk.layers)
        if not missing:
            kept += 1
        elif len(missing) == len(bulk.layers):
            todo.append(item)
        else:  # a crash between this range's layer commits
            fill(bulk, state, item, missing, keys or (ROW,))
            kept += 1
    writers: dict[int, RangeWriter] = {}
    held: dict[int, list[pa.Table]] = {}

    def writer(item: Range) -> RangeWriter:
        with lock:
            if item.index not in writers:
                writers[item.index] = bulk.writer(item.index, state.range_batch(item.index))
            return writers[item.index]

    def block(item: Range, read: ReadTable) -> None:
        on_block(read)
        if not keys:
            held.setdefault(item.index, []).append(read.rows)
            return
        writer(item).add(milestoned(item, read.rows), flush_bytes=flush_bytes)

    def done(item: Range) -> None:
        if not keys:
            parts = held.pop(item.index, [])
            rows = pa.concat_tables(parts) if parts else reader.arrow_schema.empty_table()
            writer(item).add(milestoned(item, rows), flush_bytes=flush_bytes)
        with lock:
            range_writer = writers.pop(item.index, None)
        (range_writer or bulk.writer(item.index, state.range_batch(item.index))).commit()

    read_ranges(
        snapshot,
        reader,
        todo,
        workers=workers,
        on_block=block,
        on_range=done,
        limit=limit,
        stop=stop,
        progress=progress,
        where=where,
    )
    return len(todo), kept


def fill(
    bulk: BulkTable, state: LoadState, item: Range, missing: list[Layer], keys: tuple[str, ...]
) -> None:
    """Give the layers a crash left without range `item` its rows, from its changelog rows."""
    batch_id = state.range_batch(item.index)
    rows = without_batch(bulk.changelog_rows(batch_id))
    changes = TableChanges(bulk.table, keys, rows)
    batch = milestone(changes, None, batch_id=batch_id, ingested_at=datetime.now(UTC))
    writer = bulk.writer(item.index, batch_id, missing)
    writer.add(batch)
    writer.commit()
    log.info(
        "table %s: range %d completed in %s from its changelog",
        bulk.table,
        item.index,
        ", ".join(layer.value for layer in missing),
    )

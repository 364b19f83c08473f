"""Loaded rows reconciled with what the lake already holds, through the lake's writer API.

A table the lake holds rows of (a re-snapshot after the lake was restored or lost its
offsets, `tidemark resync`, a table taken back into the config, a reference table's
refresh) cannot be written in bulk: its keys exist. Its snapshot rows go through the core
instead, against the open versions, as every batch does: a row identical to its key's open
version adds nothing (docs/pipeline.md, "The replay guard"), a changed row one version, a
new key a first one; rows whose key the snapshot no longer holds are deleted from live and
closed in forensic at the snapshot's time. Commits are serialised (one batch at a time),
with batch ids from the load's `BatchIds`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.postgres.copyread import TableReader
from tidemark.connectors.postgres.exported import SnapshotPoint, taken_at
from tidemark.kernel.columns import COUNT, ROW, Layer, Op
from tidemark.sinks.bulk import BulkTable
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.loading.events import deletes_like, snapshot_events
from tidemark.stream_processors.milestoning.core import milestone

log = logging.getLogger(__name__)


class Reconciler:
    """Applies snapshot rows (and deletes) of one table to the lake, one batch at a time.

    Args:
        lake: the load's lake.
        table, source: the lake table and its source.
        key_columns: the key (empty: a table without one).
        layers: the layers it is kept in.
        next_id: a new batch id per commit.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        table: str,
        source: str,
        key_columns: tuple[str, ...],
        layers: frozenset[Layer],
        next_id: Callable[[], int],
    ) -> None:
        self.lake = lake
        self.table = table
        self.source = source
        self.key_columns = key_columns
        self.layers = layers
        self.next_id = next_id
        self.lock = threading.Lock()
        self.versions = 0

    def apply(
        self,
        rows: pa.Table,
        point: SnapshotPoint,
        first_seq: int,
        *,
        op: Op = Op.READ,
    ) -> None:
        """Milestone `rows` (snapshot rows, or deletes) at `point` and commit them."""
        if rows.num_rows == 0:
            return
        changes = snapshot_events(
            self.table,
            rows,
            key_columns=self.key_columns,
            point=point,
            first_seq=first_seq,
            source_ts=taken_at(point),
            op=op,
        )
        keys = changes.events.select(list(changes.key_columns))
        with self.lock:
            batch_id = self.next_id()
            current = self.lake.current_versions(self.table, keys, self.layers)
            result = milestone(
                changes,
                current,
                batch_id=batch_id,
                ingested_at=datetime.now(UTC),
                applied_position=self.lake.applied_position(self.table, self.layers),
            )
            self.versions += result.forensic_inserts.num_rows
            self.lake.commit_batch(
                batch_id,
                [result],
                source_positions={},  # a snapshot point, not where the stream is
                started_at=datetime.now(UTC),
                layers={self.table: self.layers},
                closed_by="load",
            )

    def vanished(
        self,
        bulk: BulkTable,
        present: pa.Table,
        reader: TableReader,
        point: SnapshotPoint,
        first_seq: int,
    ) -> int:
        """Delete the lake's rows whose key `present` (the snapshot's keys) lacks; how many."""
        keys = list(self.key_columns) or [ROW]
        held = bulk.open_rows()
        if held is None or held.num_rows == 0:
            return 0
        gone = anti_join(held, present, keys)
        if gone.num_rows == 0:
            return 0
        log.warning(
            "table %s: %d row(s) vanished at the source: deleted from live and closed in forensic",
            self.table,
            gone.num_rows,
        )
        self.apply(deletes_like(gone, reader.arrow_schema), point, first_seq, op=Op.DELETE)
        return int(gone.num_rows)

    def counts(self, bulk: BulkTable, rows: pa.Table, point: SnapshotPoint, first_seq: int) -> int:
        """A table without a key: make the lake's count of each row image the snapshot's.

        Its snapshot rows cannot simply go through the core, which adds up counts; so the
        difference per image becomes that many snapshot rows (more in the source) or deletes
        (fewer). Returns how many such events there were.
        """
        wanted = rows.group_by(ROW).aggregate([(ROW, "count")]).rename_columns([ROW, "_s"])
        image = list(rows.column_names)
        held = bulk.open_rows([*image, COUNT])
        if held is None or held.num_rows == 0:
            held = pa.table({ROW: pa.array([], pa.string()), COUNT: pa.array([], pa.int64())})
        lake = held.select([ROW, COUNT]).rename_columns([ROW, "_l"])
        diff = wanted.join(lake, keys=[ROW], join_type="full outer")
        source_n = pc.fill_null(diff.column("_s"), 0).cast(pa.int64())
        lake_n = pc.fill_null(diff.column("_l"), 0).cast(pa.int64())
        more = diff.filter(pc.greater(source_n, lake_n))
        fewer = diff.filter(pc.less(source_n, lake_n))
        events = 0
        if more.num_rows:
            times = pc.subtract(
                pc.fill_null(more.column("_s"), 0), pc.fill_null(more.column("_l"), 0)
            ).cast(pa.int64())
            picked = _repeat(_one_per(rows, more.column(ROW)), times)
            self.apply(picked, point, first_seq)
            events += picked.num_rows
        if fewer.num_rows:
            times = pc.subtract(
                pc.fill_null(fewer.column("_l"), 0), pc.fill_null(fewer.column("_s"), 0)
            ).cast(pa.int64())
            gone = _repeat(_one_per(held.select(image), fewer.column(ROW)), times)
            self.apply(gone, point, first_seq + events, op=Op.DELETE)
            events += gone.num_rows
        return events


def _one_per(rows: pa.Table, digests: pa.Array) -> pa.Table:
    """One row of `rows` per digest in `digests`, in that order."""
    index = pc.index_in(digests, value_set=rows.column(ROW).combine_chunks())
    return rows.take(index)


def _repeat(rows: pa.Table, times: pa.Array) -> pa.Table:
    """Row i of `rows` repeated `times[i]` times."""
    counts = times.to_pylist()
    index = [i for i, n in enumerate(counts) for _ in range(int(n))]
    return rows.take(pa.array(index, pa.int64()))


def source_keys(cursor: Any, reader: TableReader) -> pa.Table:
    """The key (for a table without one, `_tm_row`) of every row the cursor's snapshot holds."""
    keyed = reader.key_columns
    plans = tuple(p for p in reader.plans if p.name in keyed) if keyed else reader.plans
    keys_only = TableReader(reader.table, reader.schema, reader.name, plans, reader.key_columns)
    wanted = list(keyed) or [ROW]
    parts = [block.rows.select(wanted) for block, _ in keys_only.read(cursor)]
    if parts:
        return pa.concat_tables(parts)
    return keys_only.arrow_schema.empty_table().select(wanted)


def anti_join(held: pa.Table, present: pa.Table, keys: Sequence[str]) -> pa.Table:
    """The rows of `held` whose key `present` lacks (keys cast to `held`'s types)."""
    names = list(keys)
    held = held.select(names)
    if present.num_rows == 0:
        return held
    present = pa.table({k: pc.cast(present.column(k), held.schema.field(k).type) for k in names})
    return held.join(present, keys=names, join_type="left anti")

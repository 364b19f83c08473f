"""What each lake layer receives, derived from a resolved timeline (DESIGN §3.2).

By the time these run, replays are gone, TOAST placeholders hold real values and no-op
updates are flagged, so each layer is a filter plus a shift over the timeline.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import (
    BATCH,
    BATCH_IN,
    BATCH_OUT,
    INGESTED_AT,
    OP,
    POSITION,
    SOURCE_TS,
    VALID_FROM,
    VALID_TO,
    Op,
)
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.milestoning.timeline import IS_CURRENT, ORD, TS, UTC_US, Timeline


def _constant(value: object, n: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n)


def _is_delete(op: pa.Array) -> pa.BooleanArray:
    return pc.fill_null(pc.equal(op, Op.DELETE.value), False)


def changelog(
    events: pa.Table, timeline: Timeline, *, batch_id: int, ingested_at: datetime
) -> pa.Table:
    """Every kept event once, in arrival order, as it came (placeholders stay NULL there).

    Keeps `_tm_before` and `_tm_unchanged` when the decoder sent them.
    """
    ords = pc.filter(timeline.column(ORD), pc.invert(timeline.column(IS_CURRENT)))
    if len(ords) < events.num_rows:
        events = events.filter(pc.is_in(arrays.row_index(events.num_rows), value_set=ords))
    n = events.num_rows
    return events.append_column(BATCH, _constant(batch_id, n, pa.int64())).append_column(
        INGESTED_AT, _constant(ingested_at, n, UTC_US)
    )


def live(timeline: Timeline, *, batch_id: int) -> tuple[pa.Table, pa.Table]:
    """The last change per key: an upsert of its row, or a delete of its key.

    Returns:
        (upserts: source columns + `_tm_op`, `_tm_position`, `_tm_source_ts`, `_tm_batch`;
         deletes: key columns + `_tm_position`).
    """
    last = pc.and_(arrays.ends_of_runs(timeline.starts), pc.invert(timeline.column(IS_CURRENT)))
    rows = timeline.rows.filter(last)
    deleted = _is_delete(arrays.flat(rows.column(OP)))
    kept = rows.filter(pc.invert(deleted))
    upserts = kept.select([*timeline.source_columns, OP, POSITION, TS]).rename_columns(
        [*timeline.source_columns, OP, POSITION, SOURCE_TS]
    )
    upserts = upserts.append_column(BATCH, _constant(batch_id, kept.num_rows, pa.int64()))
    deletes = rows.filter(deleted).select([*timeline.key_columns, POSITION])
    return upserts, deletes


def forensic(
    timeline: Timeline, unchanged: pa.BooleanArray, *, batch_id: int
) -> tuple[pa.Table, pa.Table]:
    """New versions with chained intervals, and closes for versions open before the batch.

    Every row that is not a no-op is a boundary: a current version, a new version or a
    delete. Each version is valid until the next boundary of its key (the next change's
    `_tm_source_ts`), or open (NULL) when nothing follows. Deletes end a version but are not
    versions themselves. A change whose source time precedes its key's previous boundary
    (Debezium stamps snapshot rows with the time they were read, which can be later than a
    change streamed after the snapshot point) starts when the previous version started, so
    intervals never overlap.

    Returns:
        (inserts: source columns + `_tm_valid_from`, `_tm_valid_to`, `_tm_batch_in`,
         `_tm_batch_out`, `_tm_op`, `_tm_position`;
         closes: key columns + `_tm_valid_to`, `_tm_batch_out`).
    """
    chain = timeline.filter(pc.invert(unchanged))
    chain = chain.with_column(TS, arrays.running_max_per_run(chain.column(TS), chain.starts))
    ts = chain.column(TS)
    last = arrays.ends_of_runs(chain.starts)
    valid_to = pc.if_else(last, pa.scalar(None, UTC_US), arrays.shift_up(ts))
    batch_out = pc.if_else(
        pc.is_null(valid_to), pa.scalar(None, pa.int64()), pa.scalar(batch_id, pa.int64())
    )
    is_current = chain.column(IS_CURRENT)
    rows = chain.rows.append_column(VALID_TO, valid_to).append_column(BATCH_OUT, batch_out)
    is_version = pc.and_(pc.invert(is_current), pc.invert(_is_delete(chain.column(OP))))
    versions = rows.filter(is_version)
    inserts = pa.table(
        {
            **{name: versions.column(name) for name in chain.source_columns},
            VALID_FROM: versions.column(TS),
            VALID_TO: versions.column(VALID_TO),
            BATCH_IN: _constant(batch_id, versions.num_rows, pa.int64()),
            BATCH_OUT: versions.column(BATCH_OUT),
            OP: versions.column(OP),
            POSITION: versions.column(POSITION),
        }
    )
    closed = rows.filter(pc.and_(is_current, pc.is_valid(valid_to)))
    closes = closed.select([*chain.key_columns, VALID_TO, BATCH_OUT])
    return inserts, closes

"""The replay guard as the core applies it (the rule itself: `tidemark.kernel.replay`).

Three steps, in this order in `core.milestone`:

1. `admit`: one event per position (copies re-delivered into one batch are dropped), and
   nothing at or below the watermark of the event's stream (the table in the embedded
   runtime, the event's Kafka partition in the distributed one);
2. `drop_below_key`: where a stream's watermark is unknown (NULL: a caller that keeps none,
   or a layer that does not exist yet), the key's open version is what is known to be
   applied, so it bounds the key's events instead;
3. `drop_repeated_snapshots` (after TOAST and no-op detection): a snapshot row identical to
   the key's previous version is the same source state read again (Debezium redoing an
   interrupted snapshot, a re-snapshot of a table) and appears in no layer, the changelog
   included.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import OP, POSITION, Op
from tidemark.kernel.replay import Watermark, per_event, redelivered, replayed
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.milestoning.timeline import IS_CURRENT, ORD, Timeline

logger = logging.getLogger(__name__)


def admit(events: pa.Table, watermark: Watermark, *, table: str) -> tuple[pa.Table, pa.Array]:
    """The events that are not replays, and each one's watermark (NULL: unknown).

    Events without `_tm_position` pass (the timeline reports the missing column).
    """
    watermarks = per_event(watermark, events.num_rows)
    if POSITION not in events.column_names or events.num_rows == 0:
        return events, watermarks
    positions = arrays.flat(events.column(POSITION))
    ops = arrays.flat(events.column(OP)) if OP in events.column_names else None
    drop = pc.or_(redelivered(positions), replayed(positions, ops, watermarks))
    dropped = pc.sum(drop).as_py() or 0
    if not dropped:
        return events, watermarks
    logger.info("table %s: dropped %d replayed or re-delivered event(s)", table, dropped)
    keep = pc.invert(drop)
    return events.filter(keep), watermarks.filter(keep)


def row_watermarks(line: Timeline, watermarks: pa.Array) -> pa.Array:
    """Per timeline row, its event's watermark (NULL for the open versions from the lake)."""
    ords = pc.if_else(line.column(IS_CURRENT), pa.scalar(None, pa.int64()), line.column(ORD))
    return watermarks.take(ords)


def drop_below_key(line: Timeline, watermarks: pa.Array, *, table: str) -> Timeline:
    """Events of unknown watermark at or below their key's open version: already applied.

    The open version sorts first in its key's run, so its position reaches the run's rows by
    taking the run's first row.
    """
    if line.rows.num_rows == 0 or watermarks.null_count == 0:
        return line
    is_current = line.column(IS_CURRENT)
    position = line.column(POSITION)
    own = pc.if_else(is_current, position, pa.scalar(None, position.type))
    key_position = own.take(arrays.group_starts(line.starts))
    unknown = pc.and_(pc.invert(is_current), pc.is_null(row_watermarks(line, watermarks)))
    replay = pc.and_(unknown, replayed(position, line.column(OP), key_position))
    dropped = pc.sum(replay).as_py() or 0
    if not dropped:
        return line
    logger.info("table %s: dropped %d event(s) its keys' open versions hold", table, dropped)
    return line.filter(pc.invert(replay))


def drop_repeated_snapshots(
    line: Timeline, unchanged: pa.BooleanArray, watermarks: pa.Array, *, table: str
) -> tuple[Timeline, pa.BooleanArray]:
    """Snapshot rows that repeat their key's previous version, dropped with their no-op flag.

    The previous version may be an earlier event of the batch or the open version in the
    lake. The open version counts only when every layer holds it (its position at or below
    the event's watermark, or no watermark known): a layer that is ahead after a crash (live
    committed, the changelog not) must not hide the event from the one behind.
    """
    if line.rows.num_rows == 0:
        return line, unchanged
    is_read = pc.fill_null(pc.equal(line.column(OP), Op.READ.value), False)
    candidate = pc.and_(unchanged, is_read)
    if not pc.any(candidate).as_py():
        return line, unchanged
    previous_is_current = pc.fill_null(arrays.shift_down(line.column(IS_CURRENT)), False)
    previous_position = arrays.shift_down(line.column(POSITION))
    mark = row_watermarks(line, watermarks)
    everywhere = pc.fill_null(pc.less_equal(previous_position, mark), True)
    repeat = pc.and_(candidate, pc.or_(pc.invert(previous_is_current), everywhere))
    dropped = pc.sum(repeat).as_py() or 0
    if not dropped:
        return line, unchanged
    logger.info("table %s: dropped %d snapshot row(s) the lake already holds", table, dropped)
    keep = pc.invert(repeat)
    return line.filter(keep), unchanged.filter(keep)

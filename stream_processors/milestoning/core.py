"""The milestoning core: an ordered batch of change events in, table operations out.

Pure: no I/O, no clocks, no globals. The sinks look up `current` (the open forensic versions
of the batch's keys) and apply the returned `MilestonedTable`; see docs/milestoning.md for
the semantics of each layer and the edge cases.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION, ROW
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.stream_processors.milestoning import arrays, layers, multiset, noop, timeline, toast
from tidemark.stream_processors.milestoning.errors import MilestoningError
from tidemark.stream_processors.milestoning.timeline import IS_CURRENT, Timeline

logger = logging.getLogger(__name__)

__all__ = ["MilestoningError", "milestone"]


def milestone(
    changes: TableChanges,
    current: pa.Table | None,
    *,
    batch_id: int,
    ingested_at: datetime,
    applied_position: str | None = None,
) -> MilestonedTable:
    """Turn one table's ordered change events into what each layer must write.

    Args:
        changes: the table's events of this batch, ordered by `_tm_position`.
        current: the open forensic versions of (at least) the keys in `changes`: source
            columns plus `_tm_valid_from` and `_tm_position`; None or empty for new keys.
        batch_id: this batch's id, stamped into `_tm_batch`, `_tm_batch_in/_out`.
        ingested_at: when the batch was taken in (naive means UTC).
        applied_position: optional table-wide watermark: events at or below it were
            committed before and are dropped, even for keys that have no open version.

    Returns:
        The rows to append, upsert, delete and close per layer. Events whose position is at
        or below their key's current `_tm_position` (a replay) appear nowhere.

    Raises:
        MilestoningError: a key or `_tm_` column is missing, or a column's type cannot be
            reconciled with the lake's.
    """
    events = changes.events.combine_chunks()
    positions = events.column(POSITION) if POSITION in events.column_names else None
    last_position = (pc.max(positions).as_py() if positions is not None else None) or ""
    if ingested_at.tzinfo is None:
        ingested_at = ingested_at.replace(tzinfo=UTC)
    if applied_position is not None and positions is not None:
        events = events.filter(pc.greater(positions, pa.scalar(applied_position, pa.string())))
    line = timeline.build(events, current, table=changes.table, key_columns=changes.key_columns)
    line = _one_open_version(line, table=changes.table)
    line = _drop_replays(line, table=changes.table)
    line = toast.carry_forward(line, table=changes.table)
    if changes.key_columns == (ROW,):  # a table without a key: count identical rows
        line = multiset.count_rows(line)
    unchanged = noop.unchanged_rows(line)
    upserts, deletes = layers.live(line, batch_id=batch_id)
    inserts, closes = layers.forensic(line, unchanged, batch_id=batch_id)
    return MilestonedTable(
        table=changes.table,
        key_columns=changes.key_columns,
        changelog=layers.changelog(events, line, batch_id=batch_id, ingested_at=ingested_at),
        live_upserts=upserts,
        live_deletes=deletes,
        forensic_inserts=inserts,
        forensic_closes=closes,
        last_position=last_position,
    )


def _one_open_version(line: Timeline, *, table: str) -> Timeline:
    """Keep only the newest open version per key if `current` held several (a lake defect).

    Closes are addressed by key, so two open versions of one key would be ambiguous.
    """
    is_current = line.column(IS_CURRENT)
    next_is_current = pc.fill_null(arrays.shift_up(is_current), False)
    next_same_key = pc.invert(pc.fill_null(arrays.shift_up(line.starts), True))
    stale = pc.and_(is_current, pc.and_(next_is_current, next_same_key))
    dropped = pc.sum(stale).as_py() or 0
    if not dropped:
        return line
    logger.warning("table %s: %d key(s) had several open versions; kept the newest", table, dropped)
    return line.filter(pc.invert(stale))


def _drop_replays(line: Timeline, *, table: str) -> Timeline:
    """Drop events at or below their key's current `_tm_position`: already in the lake.

    The current version sorts first in its key's run, so its position is broadcast to the
    run's rows by taking the run's first row.
    """
    if line.rows.num_rows == 0:
        return line
    is_current = line.column(IS_CURRENT)
    position = line.column(POSITION)
    own = pc.if_else(is_current, position, pa.scalar(None, position.type))
    key_position = own.take(arrays.group_starts(line.starts))
    at_or_below = pc.fill_null(pc.less_equal(position, key_position), False)
    replay = pc.and_(pc.invert(is_current), at_or_below)
    dropped = pc.sum(replay).as_py() or 0
    if not dropped:
        return line
    logger.info("table %s: dropped %d replayed event(s)", table, dropped)
    return line.filter(pc.invert(replay))

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
from tidemark.kernel.replay import Watermark
from tidemark.stream_processors.milestoning import (
    arrays,
    guard,
    layers,
    multiset,
    noop,
    timeline,
    toast,
)
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
    applied_position: Watermark = None,
) -> MilestonedTable:
    """Turn one table's ordered change events into what each layer must write.

    Args:
        changes: the table's events of this batch, ordered by `_tm_position`.
        current: the open forensic versions of (at least) the keys in `changes`: source
            columns plus `_tm_valid_from` and `_tm_position`; None or empty for new keys.
        batch_id: this batch's id, stamped into `_tm_batch`, `_tm_batch_in/_out`.
        ingested_at: when the batch was taken in (naive means UTC).
        applied_position: what the event's stream has applied (the replay guard's
            watermark, `tidemark.kernel.replay`): one position for every event (the table's),
            one per event (several Kafka partitions in one batch; NULL where unknown), or
            None. Events at or below it were committed before and are dropped, whatever
            became of their keys. Where it is unknown, the key's open version bounds it.

    Returns:
        The rows to append, upsert, delete and close per layer. Replayed events, copies of
        one position and snapshot rows that repeat their key's version appear nowhere.

    Raises:
        MilestoningError: a key or `_tm_` column is missing, or a column's type cannot be
            reconciled with the lake's.
    """
    events = changes.events.combine_chunks()
    positions = events.column(POSITION) if POSITION in events.column_names else None
    last_position = (pc.max(positions).as_py() if positions is not None else None) or ""
    if ingested_at.tzinfo is None:
        ingested_at = ingested_at.replace(tzinfo=UTC)
    table = changes.table
    events, watermarks = guard.admit(events, applied_position, table=table)
    line = timeline.build(events, current, table=table, key_columns=changes.key_columns)
    line = _one_open_version(line, table=table)
    line = guard.drop_below_key(line, watermarks, table=table)
    line = toast.carry_forward(line, table=table)
    if changes.key_columns == (ROW,):  # a table without a key: count identical rows
        line = multiset.count_rows(line)
    unchanged = noop.unchanged_rows(line)
    line, unchanged = guard.drop_repeated_snapshots(line, unchanged, watermarks, table=table)
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

"""What the runner does to batches between the decoder, the core and the lake.

Pure functions over Arrow tables, kept apart from the loop (`runner.py`) so each can be read
and tested on its own: re-delivered events are dropped, and the events of a table the lake
refuses become dead letters. (Snapshot rows leave no transaction open: the decoder gives
them no `_tm_tx_id`.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION
from tidemark.kernel.dead_letter import DeadLetter, safe_rows
from tidemark.kernel.errors import TerminalError
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.kernel.names import path_segment

logger = logging.getLogger(__name__)


def refused_table(exc: TerminalError, tables: Sequence[MilestonedTable]) -> str | None:
    """The batch table a terminal lake error is about, if it names one."""
    named = str(getattr(exc, "table", None) or "")
    for t in tables:
        folder = "/" + path_segment(t.table)
        if named and (named == t.table or named.rstrip("/").endswith(folder)):
            return t.table
        if f"`{t.table}`" in exc.message:
            return t.table
    return None


def rows_as_dead_letters(
    table: str, key_columns: Sequence[str], events: pa.Table, reason: str
) -> list[DeadLetter]:
    """One dead letter per event of a table that cannot be applied."""
    return [
        DeadLetter(
            table=table,
            raw_key=json.dumps({k: row.get(k) for k in key_columns}, default=str),
            raw_value=json.dumps(row, default=str, ensure_ascii=False),
            reason=reason,
            origin="runner.apply",
            position=row.get(POSITION),
        )
        for row in safe_rows(events)
    ]


def drop_redelivered(changes: TableChanges, batch_id: int) -> TableChanges:
    """Keep one event per `_tm_position`.

    When Debezium reconnects by itself (the source restarted) it re-delivers from the last
    flushed offset; events not yet committed can then reach the batcher twice and land in one
    batch. A position names one event, so the copies are dropped here (across batches the
    core drops them as replays).
    """
    events = changes.events
    if POSITION not in events.column_names:
        return changes
    positions = events.column(POSITION)
    if len(pc.unique(positions)) == events.num_rows:
        return changes
    seen: set[str] = set()
    keep = []
    for index, position in enumerate(positions.to_pylist()):
        if position not in seen:
            seen.add(position)
            keep.append(index)
    logger.warning(
        "batch %d, table %s: dropped %d re-delivered event(s)",
        batch_id,
        changes.table,
        events.num_rows - len(keep),
    )
    return TableChanges(changes.table, changes.key_columns, events.take(keep))

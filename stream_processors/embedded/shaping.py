"""What the runner does to batches between the decoder, the core and the lake.

Pure functions over Arrow tables, kept apart from the loop (`runner.py`) so each can be read
and tested on its own: snapshot rows leave no transaction open, re-delivered events are
dropped, and the events of a table the lake refuses become dead letters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stream_processors.milestoning.columns import OP, POSITION, TX_ID, Op
from stream_processors.milestoning.dead_letter import DeadLetter
from stream_processors.milestoning.errors import TerminalError
from stream_processors.milestoning.model import MilestonedTable, TableChanges

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Decoded:
    """A decoded chunk with its changes replaced (same fields the batcher reads)."""

    changes: dict[str, TableChanges]
    transactions: Sequence[Any]
    dead_letters: Sequence[Any]
    last_position: str | None


def snapshot_rows_without_tx(decoded: Any) -> Any:
    """Snapshot rows (op r) get a NULL `_tm_tx_id`.

    Debezium stamps them with the snapshot transaction's id but sends no END marker for it,
    while the batcher completes a transaction only on its END (or, for rows without an id,
    at once). Without this the snapshot would be held forever.
    """
    changes: dict[str, TableChanges] = {}
    touched = False
    for name, table in decoded.changes.items():
        events = table.events
        if TX_ID in events.column_names and OP in events.column_names:
            is_read = pc.fill_null(pc.equal(events.column(OP), Op.READ.value), False)
            if pc.any(is_read).as_py():
                tx = pc.if_else(is_read, pa.scalar(None, events.schema.field(TX_ID).type),
                                events.column(TX_ID))
                events = events.set_column(events.schema.get_field_index(TX_ID), TX_ID, tx)
                touched = True
        changes[name] = TableChanges(table.table, table.key_columns, events)
    if not touched:
        return decoded
    return _Decoded(changes, decoded.transactions, decoded.dead_letters, decoded.last_position)


def refused_table(exc: TerminalError, tables: Sequence[MilestonedTable]) -> str | None:
    """The batch table a terminal lake error is about, if it names one."""
    named = str(getattr(exc, "table", None) or "")
    for t in tables:
        if named and (named == t.table or named.rstrip("/").endswith("/" + t.table)):
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
        for row in events.to_pylist()
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
    logger.warning("batch %d, table %s: dropped %d re-delivered event(s)",
                   batch_id, changes.table, events.num_rows - len(keep))
    return TableChanges(changes.table, changes.key_columns, events.take(keep))

"""The core's output for a batch whose every event is its key's first: a bulk load.

A table the lake does not hold yet, loaded by the parallel loader, comes as snapshot rows
(op `r`) whose keys are unique (a primary key, or the replica identity's unique index) and
have no open version anywhere: each row is the first version of its key. `milestone` would
order, compare and chain them only to find exactly that; for a load of millions of rows this
builds the same `MilestonedTable` directly: every event in the changelog, every row in live,
every row a first version, open, in forensic (`tests/test_milestoning_first.py` checks it
equals `milestone`'s output).
"""

from __future__ import annotations

from datetime import UTC, datetime

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
    is_metadata,
)
from tidemark.kernel.model import MilestonedTable, TableChanges

UTC_US = pa.timestamp("us", tz="UTC")


def _unique(events: pa.Table, keys: list[str]) -> bool:
    """Whether no key occurs twice. A single key column in strictly increasing order (a
    table read in physical order that was filled in key order, the common case) proves it
    in one pass; otherwise every key is hashed (a fifth of a second per million rows)."""
    if len(keys) == 1 and events.num_rows > 1:
        column = events.column(keys[0])
        try:
            increasing = pc.all(
                pc.less(column.slice(0, len(column) - 1), column.slice(1)), skip_nulls=False
            )
        except pa.ArrowNotImplementedError:  # a key type without an order
            increasing = pa.scalar(None, pa.bool_())
        if increasing.as_py():
            return True
    return bool(events.select(keys).group_by(keys).aggregate([]).num_rows == events.num_rows)


def first_versions(
    changes: TableChanges, *, batch_id: int, ingested_at: datetime
) -> MilestonedTable:
    """What `milestone(changes, None, ...)` gives when every key occurs once (no open
    versions, no deletes, no TOAST placeholders): see the module docstring.

    Raises:
        ValueError: a key occurs twice (then use `milestone`).
    """
    events = changes.events.combine_chunks()
    n = events.num_rows
    keys = list(changes.key_columns)
    if n and not _unique(events, keys):
        raise ValueError(f"table `{changes.table}`: a key occurs twice in a bulk load")
    if ingested_at.tzinfo is None:
        ingested_at = ingested_at.replace(tzinfo=UTC)
    source = [c for c in events.column_names if not is_metadata(c)]
    batch = pa.repeat(pa.scalar(batch_id, pa.int64()), n)
    changelog = events.append_column(BATCH, batch).append_column(
        INGESTED_AT, pa.repeat(pa.scalar(ingested_at, UTC_US), n)
    )
    live = events.select([*source, OP, POSITION, SOURCE_TS]).append_column(BATCH, batch)
    forensic = pa.table(
        {
            **{name: events.column(name) for name in source},
            VALID_FROM: events.column(SOURCE_TS),
            VALID_TO: pa.nulls(n, UTC_US),
            BATCH_IN: batch,
            BATCH_OUT: pa.nulls(n, pa.int64()),
            OP: events.column(OP),
            POSITION: events.column(POSITION),
        }
    )
    positions = events.column(POSITION)
    return MilestonedTable(
        table=changes.table,
        key_columns=changes.key_columns,
        changelog=changelog,
        live_upserts=live,
        live_deletes=pa.table(
            {
                **{k: pa.array([], events.schema.field(k).type) for k in keys},
                POSITION: pa.array([], pa.string()),
            }
        ),
        forensic_inserts=forensic,
        forensic_closes=pa.table(
            {
                **{k: pa.array([], events.schema.field(k).type) for k in keys},
                VALID_TO: pa.array([], UTC_US),
                BATCH_OUT: pa.array([], pa.int64()),
            }
        ),
        last_position=(pc.max(positions).as_py() if n else None) or "",
    )

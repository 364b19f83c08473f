"""Loaded rows as the change events the core milestones (DESIGN §3.1).

A row read by the loader is a snapshot row (op `r`), exactly like one of Debezium's: the
same columns the decoder gives a snapshot event (the row image, `_tm_op`, `_tm_position`,
`_tm_tx_id` NULL, `_tm_source_ts` the snapshot's time, `_tm_before` and `_tm_unchanged`
NULL), at a position of the load's snapshot point (`connectors/postgres/exported.py`). Rows
that vanished at the source while the table was not read become deletes at the same point.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa

from tidemark.connectors.postgres.exported import SnapshotPoint
from tidemark.kernel.columns import BEFORE, OP, POSITION, ROW, SOURCE_TS, TX_ID, UNCHANGED_TOAST, Op
from tidemark.kernel.model import TableChanges

UTC_US = pa.timestamp("us", tz="UTC")


def event_schema(rows: pa.Schema) -> pa.Schema:
    """The events' schema for rows of `rows` (the decoder's layout, `_tm_row` after the
    image for a table without a key)."""
    image = [f for f in rows if f.name != ROW]
    return pa.schema(
        [
            *rows,
            pa.field(OP, pa.string()),
            pa.field(POSITION, pa.string()),
            pa.field(TX_ID, pa.string()),
            pa.field(SOURCE_TS, UTC_US),
            pa.field(BEFORE, pa.struct(image)),
            pa.field(UNCHANGED_TOAST, pa.list_(pa.string())),
        ]
    )


def snapshot_events(
    table: str,
    rows: pa.Table,
    *,
    key_columns: Sequence[str],
    point: SnapshotPoint,
    first_seq: int,
    source_ts: datetime,
    op: Op = Op.READ,
) -> TableChanges:
    """`rows` as snapshot events (or deletes, `op`) numbered from `first_seq` at `point`."""
    n = rows.num_rows
    schema = event_schema(rows.schema)
    columns = [
        *rows.columns,
        pa.repeat(pa.scalar(op.value, pa.string()), n),
        point.positions(first_seq, n),
        pa.nulls(n, pa.string()),
        pa.repeat(pa.scalar(source_ts, UTC_US), n),
        pa.nulls(n, schema.field(BEFORE).type),
        pa.nulls(n, schema.field(UNCHANGED_TOAST).type),
    ]
    keys = tuple(key_columns) or (ROW,)
    return TableChanges(table, keys, pa.Table.from_arrays(columns, schema=schema))


def deletes_like(keys: pa.Table, rows: pa.Schema) -> pa.Table:
    """Rows of schema `rows` holding only `keys` (every other column NULL): a delete's image."""
    columns = []
    for item in rows:
        if item.name in keys.column_names:
            columns.append(keys.column(item.name).cast(item.type))
        else:
            columns.append(pa.nulls(keys.num_rows, item.type))
    return pa.Table.from_arrays(columns, schema=rows)

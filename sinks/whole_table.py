"""What the lake does to a whole table at once: read every current row, find its key, and
rename or widen a column in every layer (docs/schema-changes.md).

The `Lake` facade exposes these as methods; they live here to keep the facade about batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from tidemark.kernel.columns import BUCKET, CURRENT, POSITION, VALID_FROM, Layer, is_metadata
from tidemark.sinks.delta.forensic import ForensicSink
from tidemark.sinks.delta.live import LiveSink
from tidemark.sinks.layout import Bucketing
from tidemark.sinks.rewrite import ColumnChange, rewrite

if TYPE_CHECKING:
    from tidemark.sinks.lake import Lake

_ORDER = (Layer.CHANGELOG, Layer.LIVE, Layer.FORENSIC)


def current_rows(lake: Lake, table: str, layers: frozenset[Layer]) -> pa.Table | None:
    """Every current row of `table` (source columns and `_tm_position`): live when the table
    keeps it, else the open forensic versions; None when neither exists.

    For changes that touch every row (a TRUNCATE, a column added with a default): the whole
    table's current rows are held in memory.
    """
    if Layer.LIVE in layers:
        handle = lake.sink(table, Layer.LIVE).handle
        rows = handle.read() if handle.dt is not None else None
    elif Layer.FORENSIC in layers:
        handle = lake.sink(table, Layer.FORENSIC).handle
        found = handle.dt is not None
        rows = handle.read(partitions=[(CURRENT, "=", "true")]) if found else None
    else:
        return None
    if rows is None:
        return None
    return rows.select([c for c in rows.column_names if not is_metadata(c) or c == POSITION])


def key_columns(lake: Lake, table: str) -> tuple[str, ...] | None:
    """The key columns the lake keeps `table` by: stored with the bucketing (tables made
    since schema changes are applied), else the forensic statistics columns before
    `_tm_valid_from` (older tables)."""
    for layer in (Layer.LIVE, Layer.FORENSIC):
        handle = lake.sink(table, layer).handle
        if handle.dt is None:
            continue
        keys = Bucketing.keys_from_json(handle.description)
        if keys:
            return keys
        stats = handle.dt.metadata().configuration.get("delta.dataSkippingStatsColumns")
        if stats:
            names = [n.strip("`") for n in stats.split(",")]
            if VALID_FROM in names and names.index(VALID_FROM) > 0:
                return tuple(names[: names.index(VALID_FROM)])
    return None


def change_column(
    lake: Lake,
    table: str,
    change: ColumnChange,
    *,
    batch_id: int,
    position: str,
    layers: frozenset[Layer],
    key_columns: tuple[str, ...],
) -> int:
    """Rename or widen one column in every kept layer of `table`; the rows rewritten.

    Each layer is rewritten in one commit stamped with `batch_id` and `position`, so a change
    applied to some layers before a crash is completed, not repeated. A key column that
    changes has its rows' buckets computed again (hash buckets depend on the value's type).
    """
    keys = tuple(change.name if k == change.column else k for k in key_columns)
    total = 0
    for layer in _ORDER:
        if layer not in layers:
            continue
        sink = lake.sink(table, layer)
        finish = None
        if (
            isinstance(sink, LiveSink | ForensicSink)
            and sink.bucketing
            and change.column in key_columns
        ):
            bucketing = sink.bucketing

            def finish(rows: pa.Table, b: Bucketing = bucketing) -> pa.Table:
                index = rows.schema.get_field_index(BUCKET)
                return rows.set_column(index, BUCKET, b.assign(rows, keys))

        total += rewrite(sink.handle, change, batch_id=batch_id, position=position, finish=finish)
        if isinstance(sink, LiveSink | ForensicSink):
            sink.rows.clear()
            if change.rename_to and sink.handle.dt is not None:
                sink.handle.set_description(Bucketing.with_keys(sink.handle.description, keys))
        if isinstance(sink, ForensicSink) and change.rename_to and sink.handle.dt is not None:
            sink.handle.set_properties(sink.configuration(keys))
    return total

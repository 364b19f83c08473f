"""Postgres "unchanged TOAST" placeholders: take the previous version's value.

When an update does not touch a large (TOASTed) column, pgoutput does not send its value;
Debezium marks it with a placeholder and the decoder turns that into NULL plus the column's
name in `_tm_unchanged`. The value to store is the one the key held just before: the previous
event in the batch, or the open version in the lake. It is never written as data.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import OP, UNCHANGED_TOAST, Op
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.milestoning.timeline import Timeline

logger = logging.getLogger(__name__)


def carry_forward(timeline: Timeline, *, table: str) -> Timeline:
    """Replace each placeholder by the value of the key's last real value before it.

    A run of placeholders (several updates that all skip the column) resolves to the last
    real value before the run, found with one forward fill over row numbers per column.
    A placeholder with nothing before it (no earlier event, no current version) stays NULL
    and is logged: the lake never saw the value, so it cannot be invented.
    """
    if UNCHANGED_TOAST not in timeline.rows.column_names:
        return timeline
    unchanged = timeline.column(UNCHANGED_TOAST)
    names = pc.list_flatten(unchanged)
    if len(names) == 0:
        return timeline
    parents = pc.list_parent_indices(unchanged)
    n = timeline.rows.num_rows
    index = arrays.row_index(n)
    group_start = arrays.group_starts(timeline.starts)
    not_delete = pc.fill_null(pc.not_equal(timeline.column(OP), Op.DELETE.value), True)
    no_row = pa.scalar(None, pa.int64())
    for name in pc.unique(names).to_pylist():
        if name not in timeline.source_columns or name in timeline.key_columns:
            continue
        rows_with = pc.filter(parents, pc.equal(names, name))
        placeholder = pc.and_(pc.is_in(index, value_set=rows_with), not_delete)
        source_row = pc.fill_null_forward(pc.if_else(placeholder, no_row, index))
        inside = pc.fill_null(pc.greater_equal(source_row, group_start), False)
        source_row = pc.if_else(inside, source_row, no_row)
        unresolved = pc.sum(pc.and_(placeholder, pc.is_null(source_row))).as_py() or 0
        if unresolved:
            logger.warning(
                "table %s: %d TOAST placeholder(s) in column %s have no earlier value; kept NULL",
                table,
                unresolved,
                name,
            )
        timeline = timeline.with_column(name, timeline.column(name).take(source_row))
    return timeline

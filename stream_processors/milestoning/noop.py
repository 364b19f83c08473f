"""Changes that change nothing: they make no forensic version and close nothing.

An update, snapshot read or create whose every source column equals the key's previous
version is a no-op, whether that previous version came earlier in the batch or is the open
version in the lake (a create can only repeat an open version when it is replayed). Compared
after TOAST carry-forward, so a placeholder counts as "unchanged".
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import OP, Op
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.milestoning.timeline import IS_CURRENT, Timeline

_REPEATABLE = pa.array([Op.UPDATE.value, Op.READ.value, Op.CREATE.value])


def unchanged_rows(timeline: Timeline) -> pa.BooleanArray:
    """True for event rows that repeat the previous version of their key exactly.

    Nothing that follows a delete is a no-op: a create after a delete re-opens the key, even
    with the same values.
    """
    op = timeline.column(OP)
    is_current = timeline.column(IS_CURRENT)
    prev_op = arrays.shift_down(op)
    prev_is_current = pc.fill_null(arrays.shift_down(is_current), False)
    prev_is_version = pc.or_(
        prev_is_current, pc.fill_null(pc.not_equal(prev_op, Op.DELETE.value), False)
    )
    candidate = pc.and_(
        pc.and_(pc.invert(is_current), pc.fill_null(pc.is_in(op, value_set=_REPEATABLE), False)),
        pc.and_(pc.invert(timeline.starts), prev_is_version),
    )
    slow: list[str] = []
    for name in timeline.source_columns:
        if not pc.any(candidate).as_py():
            return candidate
        values = timeline.column(name)
        same = arrays.same_values(values, arrays.shift_down(values))
        if same is None:
            slow.append(name)
        else:
            candidate = pc.and_(candidate, same)
    for name in slow:
        rows = pc.indices_nonzero(candidate)
        if len(rows) == 0:
            break
        values = timeline.column(name)
        keep = arrays.same_values_slow(values, arrays.shift_down(values), rows)
        kept = pa.array(sorted(keep), pa.int64())
        candidate = pc.is_in(arrays.row_index(len(values)), value_set=kept)
    return candidate

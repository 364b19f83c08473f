"""Tables without a key: each distinct row image is a key, and its count is part of its row.

A table with `REPLICA IDENTITY FULL` and no primary key may hold the same row several times.
Its key is `_tm_row`, a digest of the row image (connectors/decode/rowkey.py), and the lake
keeps one row per distinct image with `_tm_count`, how many such rows the source holds. The
decoder sends a create (+1) per inserted row and a delete (-1) per deleted row (an update is
both), so per key the count is the open version's count plus a running sum. Every event then
becomes an ordinary change of its key: the first row of an image a create, a change of the
count an update, the last one leaving a delete (snapshot reads stay reads). A delete of an image
the lake does not hold (its insert became a dead letter) leaves the count at zero.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import COUNT, OP, Op
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.milestoning.timeline import IS_CURRENT, Timeline


def count_rows(line: Timeline) -> Timeline:
    """Give every event of a keyless table its key's count and the operation it amounts to."""
    n = line.rows.num_rows
    if n == 0:
        return _with_count(line, pa.array([], pa.int64()))
    is_current = line.column(IS_CURRENT)
    op = line.column(OP)
    if COUNT in line.rows.column_names:
        held = pc.fill_null(line.column(COUNT).cast(pa.int64()), 1)
    else:
        held = pa.repeat(pa.scalar(1, pa.int64()), n)
    step = pc.if_else(pc.fill_null(pc.equal(op, Op.DELETE.value), False), -1, 1).cast(pa.int64())
    delta = pc.if_else(is_current, held, step)
    counts = _running_sums(delta, line.starts)
    before = pc.subtract(counts, delta)
    ops = pc.if_else(
        pc.equal(counts, 0),
        pa.scalar(Op.DELETE.value),
        pc.if_else(
            pc.fill_null(pc.equal(op, Op.READ.value), False),
            Op.READ.value,
            pc.if_else(pc.equal(before, 0), Op.CREATE.value, Op.UPDATE.value),
        ),
    )
    ops = pc.if_else(is_current, op, ops)
    line = line.with_column(OP, ops.cast(op.type))
    return _with_count(line, counts)


def _running_sums(delta: pa.Array, starts: pa.BooleanArray) -> pa.Array:
    """Per run, the running sum of `delta`, never below zero."""
    total = pc.cumulative_sum(delta)
    start = arrays.group_starts(starts)
    offset = pc.subtract(total.take(start), delta.take(start))
    sums = pc.subtract(total, offset)
    if pc.min(sums).as_py() >= 0:
        return sums
    # A delete the lake never saw the insert of: walk the runs, stopping at zero.
    out: list[int] = []
    running = 0
    for value, first in zip(delta.to_pylist(), starts.to_pylist(), strict=True):
        running = max(0, (0 if first else running) + value)
        out.append(running)
    return pa.array(out, pa.int64())


def _with_count(line: Timeline, counts: pa.Array) -> Timeline:
    if COUNT in line.rows.column_names:
        return line.with_column(COUNT, counts)
    rows = line.rows.append_column(COUNT, counts)
    return Timeline(rows, line.key_columns, (*line.source_columns, COUNT), line.starts)

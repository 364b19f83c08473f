"""The replay guard's rule: which events a table (or a Kafka partition) already holds.

Tidemark has one replay guard (docs/pipeline.md, "The replay guard"). Every layer commit
records, per *stream* (the table in the embedded runtime, one Kafka partition of its topic in
the distributed runtime), the highest source position it applied: its watermark. Source
positions grow within a stream, so an event at or below the watermark was applied before,
whatever happened to its key since and whatever Kafka offset brought it again. This module
is the rule, on whole Arrow columns; the core applies it before milestoning (at the lowest
layer's watermark) and each layer's writer applies it to its own rows (at its own).

Snapshot rows (op `r`) are the exception: their positions end in an arrival counter, not in
anything the source gave (docs/decoding.md, "Positions"), so a snapshot redone after a crash
numbers the same rows differently. For them only the *snapshot point* (the position without
that counter) counts: a snapshot row is a replay when the stream has moved past its point.
Within one point the core decides by content: a snapshot row identical to the key's current
version is the same event and adds nothing anywhere (`stream_processors/milestoning/guard.py`).
"""

from __future__ import annotations

from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import Op

SEQ_WIDTH = 8
"""Hex digits at the end of a position that number events sharing one source point (the
snapshot arrival counter, or Postgres' tie-breaker; SQL Server's event serial number)."""

Watermark: TypeAlias = str | pa.Array | None
"""One watermark for every event (a string), one per event (a string array, NULL where
unknown), or none known."""


def snapshot_point(positions: pa.Array) -> pa.Array:
    """The positions without their trailing counter: where a snapshot row's source state is."""
    return pc.utf8_slice_codeunits(positions, 0, -SEQ_WIDTH)


def per_event(watermark: Watermark, n: int) -> pa.Array:
    """`watermark` as a string array of length `n` (NULL where unknown)."""
    if isinstance(watermark, pa.ChunkedArray):
        watermark = watermark.combine_chunks()
    if isinstance(watermark, pa.Array):
        if len(watermark) != n:
            raise ValueError(f"{len(watermark)} watermarks for {n} events")
        return watermark.cast(pa.string())
    return pa.repeat(pa.scalar(watermark, pa.string()), n)


def replayed(positions: pa.Array, ops: pa.Array | None, watermarks: pa.Array) -> pa.BooleanArray:
    """True for events a stream already holds: at or below its watermark (never NULL).

    Args:
        positions: the events' `_tm_position`.
        ops: their `_tm_op` (None: all streamed changes, e.g. live deletes).
        watermarks: per event, what its stream has applied (`per_event`); NULL: nothing known.
    """
    if len(positions) == 0 or watermarks.null_count == len(watermarks):
        return pa.repeat(False, len(positions)).cast(pa.bool_())
    streamed = pc.less_equal(positions, watermarks)
    if ops is not None:
        is_read = pc.fill_null(pc.equal(ops, Op.READ.value), False)
        if pc.any(is_read).as_py():
            snapshot = pc.less(snapshot_point(positions), snapshot_point(watermarks))
            streamed = pc.if_else(is_read, snapshot, streamed)
    return pc.fill_null(streamed, False)


def redelivered(positions: pa.Array) -> pa.BooleanArray:
    """True for every copy of a position after its first (in arrival order).

    A position names one source event, so copies in one batch (Debezium re-delivers after it
    reconnects by itself) are the same event delivered twice.
    """
    n = len(positions)
    if n < 2:
        return pa.repeat(False, n).cast(pa.bool_())
    earlier, later = positions.slice(0, n - 1), positions.slice(1)
    if not pc.any(pc.fill_null(pc.less(later, earlier), False)).as_py():
        # in position order (the contract): copies are neighbours
        copy = pc.fill_null(pc.equal(later, earlier), False)
        return pa.concat_arrays([pa.array([False]), copy])
    order = pc.sort_indices(pa.table({"p": positions}), sort_keys=[("p", "ascending")])
    ordered = positions.take(order)
    previous = pa.concat_arrays([pa.nulls(1, ordered.type), ordered.slice(0, n - 1)])
    copy = pc.fill_null(pc.equal(ordered, previous), False)
    # back to arrival order: original row order[i] is a copy when sorted row i is
    return copy.take(pc.sort_indices(order))

"""The replay guard at each layer (the rule: `tidemark.kernel.replay`).

The core milestones a batch at the lowest watermark of the table's layers, so that every
layer gets what it lacks. A layer ahead of that (a crash between the layers' commits; the
layers commit one after another) already holds part of it: each layer's writer keeps only
the rows above its own watermark. Forensic, committed last and read for the open versions,
is the lowest whenever it is kept, so only the changelog and live ever drop anything here.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import OP, POSITION
from tidemark.kernel.replay import per_event, replayed
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.table import DeltaHandle


def not_applied(
    handle: DeltaHandle, rows: pa.Table, streams: Sequence[StreamCommit] = ()
) -> pa.BooleanArray:
    """True for the rows of `rows` (with `_tm_position`) the layer does not hold yet.

    A commit of one stream compares with that stream's watermark in this layer. A commit of
    several streams keeps every row: the rows carry no stream, and the writer of such a
    commit checks that no stream's layers are apart (`Lake.commit_batch`).
    """
    n = rows.num_rows
    keep_all = pa.repeat(True, n).cast(pa.bool_())
    if n == 0 or len(streams) > 1 or POSITION not in rows.column_names:
        return keep_all
    watermark = handle.applied_position(streams[0].app if streams else None)
    if watermark is None:
        return keep_all
    positions = rows.column(POSITION).combine_chunks()
    ops = rows.column(OP).combine_chunks() if OP in rows.column_names else None
    return pc.invert(replayed(positions, ops, per_event(watermark, n)))

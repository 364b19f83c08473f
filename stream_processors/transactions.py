"""Where a batch may end: after whole source transactions only (DESIGN §3.3, guarantee 5),
except inside a transaction too big to hold, which goes out in parts.

Pure functions over one source's held events (their positions and transaction ids); the
batcher asks them how many events may go out and at which position to stop. A transaction
whose held events reach `part` while it is still open is the one exception: waiting for its
END would need more memory than the pipeline may hold (and, under backpressure, polling that
has stopped), so its first `part` events go out as a part, and the batch log marks the parts
as one source transaction (docs/pipeline.md, "Transactions of any size").
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.stream_processors.milestoning import arrays


@dataclass(frozen=True)
class Cut:
    """How much of a source's held events a batch takes.

    Attributes:
        count: events that go out (the first `count` in position order).
        position: the first position held back, or None when all go out.
        ready: events in complete transactions (what could go out without a size limit).
        split: the id of the open transaction whose first events this cut takes as a part
            (None: the cut ends on a transaction boundary).
        open_events: held events of the first open transaction (0 when none is open).
    """

    count: int
    position: str | None
    ready: int
    split: str | None = None
    open_events: int = 0


def complete_events(tx: pa.Array, *, marker_mode: bool, ended: Set[str]) -> pa.BooleanArray:
    """True for events whose transaction is complete (`tx` in position order).

    With markers a transaction is complete once its END arrived. Without markers only the
    newest transaction may still go on: every other one is complete, because a different
    transaction started after it. Events without a transaction id (snapshot rows) are
    always complete.
    """
    n = len(tx)
    if n == 0:
        return pa.array([], pa.bool_())
    if marker_mode:
        done = pc.is_in(tx, value_set=pa.array(sorted(ended), pa.string()))
        return pc.or_(pc.is_null(tx), pc.fill_null(done, False))
    newest = tx[n - 1]
    if not newest.is_valid:
        return pa.repeat(True, n)
    return pc.or_(pc.is_null(tx), pc.fill_null(pc.not_equal(tx, newest), True))


def plan_cut(
    position: pa.Array,
    tx: pa.Array,
    *,
    marker_mode: bool,
    ended: Set[str],
    limit: int | None,
    part: int | None = None,
) -> Cut:
    """The largest whole-transaction prefix of the held events that fits `limit`.

    Events go out in position order up to the first incomplete transaction. Within that,
    the cut falls on a transaction boundary at or below `limit`; a first transaction larger
    than `limit` goes out whole on its own. Snapshot rows (no tx id) may be cut anywhere.
    When the held events start with an open transaction of at least `part` events, its
    first `limit` events (`part` without a limit) go out as a part (`Cut.split`).
    """
    order = pc.sort_indices(position)
    position, tx = position.take(order), tx.take(order)
    n = len(position)
    complete = complete_events(tx, marker_mode=marker_mode, ended=ended)
    incomplete = pc.indices_nonzero(pc.invert(complete))
    ready = incomplete[0].as_py() if len(incomplete) else n
    opened = tx[ready] if ready < n else None
    open_events = 0 if opened is None else pc.sum(pc.equal(tx, opened)).as_py() or 0
    if ready == 0:
        if part is None or open_events < part:
            return Cut(0, None, 0, open_events=open_events)
        return _part(position, tx, opened, open_events, limit or part)
    starts = pc.or_(arrays.starts_of_runs([tx]), pc.is_null(tx))
    boundaries = [b for b in [*pc.indices_nonzero(starts).to_pylist()[1:], n] if b <= ready]
    count = ready
    if limit is not None:
        fitting = [b for b in boundaries if b <= limit]
        count = fitting[-1] if fitting else boundaries[0]
    return Cut(
        count, position[count].as_py() if count < n else None, ready, open_events=open_events
    )


def _part(position: pa.Array, tx: pa.Array, opened: pa.Scalar, open_events: int, size: int) -> Cut:
    """The first `size` events of the open transaction at the head of the held events."""
    n = len(position)
    # A transaction's events are contiguous in position order (positions start with the
    # commit); should another one interleave, the part ends before it.
    others = pc.indices_nonzero(pc.fill_null(pc.not_equal(tx, opened), True))
    count = min(size, others[0].as_py() if len(others) else n)
    return Cut(
        count,
        position[count].as_py() if count < n else None,
        0,
        split=opened.as_py(),
        open_events=open_events,
    )

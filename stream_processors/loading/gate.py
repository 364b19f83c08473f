"""Where a loaded table meets its change stream: no change lost, none applied twice.

A load's snapshot sits at a point of the stream (`connectors/postgres/exported.py`): its
rows have positions `(K, 0, n)`, and streamed changes of the table fall in three groups:

- commit part below K: committed before the load's marker, so in the snapshot. The load's
  hand-over recorded a watermark at K in every layer: the replay guard drops them;
- commit part at or above the snapshot's upper bound M: committed after it, applied;
- in between: in the snapshot exactly when the snapshot sees their transaction
  (`SnapshotPoint.visible`); the gate drops those, the others are applied.

A load resumed after a crash has several points: each row of the lake then came from one
of them (its position says which), and a change is judged by the snapshot its key's row came
from. A key whose row came from the stream since is past the hand-over; a key the lake
holds no row of is judged by the last snapshot (`stream_processors/loading/load.py` explains
why that is exact).

While a table's load has not handed over, its streamed changes must wait: `admit` raises
`TableLoading` (transient), so the runner retries the batch and the stream waits (other
tables' changes in the same batch wait with it; a batch holding none of the table's
changes goes through).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.postgres.exported import SnapshotPoint
from tidemark.kernel.columns import OP, POSITION, TX_ID, Op
from tidemark.kernel.errors import TransientError
from tidemark.kernel.model import TableChanges
from tidemark.sinks.loads import LoadState

log = logging.getLogger(__name__)

_ZERO_LSN = "0" * 16


class TableLoading(TransientError):
    """A table's changes arrived while its load has not handed over: the batch waits."""


@dataclass(frozen=True)
class Handover:
    """What the gate knows of one loaded table: its points, and whether it handed over."""

    points: tuple[SnapshotPoint, ...]
    done: bool

    @property
    def upper(self) -> str:
        """The commit part at and above which no snapshot of the load holds a change."""
        return max(p.upper_part for p in self.points)

    @classmethod
    def of(cls, state: LoadState) -> Handover:
        return cls(tuple(SnapshotPoint.from_json(p) for p in state.points), state.status == "done")


class LoadGate:
    """The runner's gate for tables armed by the loader.

    Args:
        states: reads the lake's load states (`LoadLog.latest`); read again at most every
            `refresh_s` while a table is loading, and when `refresh()` is called.
    """

    def __init__(
        self, states: Callable[[], Mapping[str, LoadState]], *, refresh_s: float = 1.0
    ) -> None:
        self._states = states
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._handovers: dict[str, Handover] = {}
        self._read_at = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Read the load states again (a load started or finished)."""
        with self._lock:
            self._handovers = {t: Handover.of(s) for t, s in self._states().items()}
            self._read_at = time.monotonic()

    def loading(self, table: str) -> bool:
        handover = self._handovers.get(table)
        return handover is not None and not handover.done

    def admit(self, changes: TableChanges, current: pa.Table | None) -> TableChanges:
        """`changes` without the streamed changes the table's snapshots already hold.

        Raises:
            TableLoading: the table's load has not handed over yet (retry the batch).
        """
        handover = self._handovers.get(changes.table)
        if handover is not None and not handover.done:
            if time.monotonic() - self._read_at > self._refresh_s:
                self.refresh()
                handover = self._handovers.get(changes.table)
        if handover is None:
            return changes
        if not handover.done:
            raise TableLoading(
                f"table `{changes.table}` is being loaded; its changes wait for the hand-over",
                hint="the batch is retried until the load has handed over",
            )
        events = changes.events
        if events.num_rows == 0 or TX_ID not in events.column_names:
            return changes
        positions = events.column(POSITION).combine_chunks()
        commit = pc.utf8_slice_codeunits(positions, 0, 16)
        if pc.min(commit).as_py() >= handover.upper:
            return changes  # past every snapshot of the load
        held = self._held(changes, handover, current, commit)
        dropped = pc.sum(held).as_py() or 0
        if not dropped:
            return changes
        log.info(
            "table %s: dropped %d streamed change(s) its load's snapshot already holds",
            changes.table,
            dropped,
        )
        return TableChanges(changes.table, changes.key_columns, events.filter(pc.invert(held)))

    def _held(
        self,
        changes: TableChanges,
        handover: Handover,
        current: pa.Table | None,
        commit: pa.Array,
    ) -> pa.BooleanArray:
        """Per event: True when the snapshot its key's row came from holds it."""
        events = changes.events.combine_chunks()
        n = events.num_rows
        points = handover.points
        which = self._snapshot_of(changes, handover, current)  # per event: index or -1
        held = pa.repeat(False, n).cast(pa.bool_())
        streamed = pc.invert(pc.fill_null(pc.equal(events.column(OP), Op.READ.value), False))
        tx = events.column(TX_ID)
        for index, point in enumerate(points):
            mine = pc.and_(pc.equal(which, index), streamed)
            below = pc.less(commit, pa.scalar(point.upper_part))
            visible = point.visible(tx)
            held = pc.or_(held, pc.and_(pc.and_(mine, below), visible))
        return pc.fill_null(held, False)

    def _snapshot_of(
        self, changes: TableChanges, handover: Handover, current: pa.Table | None
    ) -> pa.Array:
        """Per event, the index of the snapshot its key's open row came from; -1 when that
        row came from the stream after the hand-over."""
        events = changes.events
        n = events.num_rows
        last = len(handover.points) - 1
        if current is None or current.num_rows == 0:
            return pa.repeat(pa.scalar(last, pa.int64()), n)
        keys = list(changes.key_columns)
        rows = current.select([*keys, POSITION]).rename_columns([*keys, "_tm_open"])
        tagged = events.select(keys).append_column("_tm_i", pa.array(range(n), pa.int64()))
        joined = tagged.join(rows, keys=keys, join_type="left outer").sort_by("_tm_i")
        opened = joined.column("_tm_open").combine_chunks()
        commit = pc.utf8_slice_codeunits(opened, 0, 16)
        lsn = pc.utf8_slice_codeunits(opened, 16, 32)
        from_load = pc.equal(lsn, pa.scalar(_ZERO_LSN))
        result = pa.repeat(pa.scalar(last, pa.int64()), n)
        first = handover.points[0].commit_part
        # a row from before the load (older than its first point): the first snapshot
        result = pc.if_else(pc.fill_null(pc.less(commit, first), False), 0, result)
        for index, point in enumerate(handover.points):
            at = pc.and_(from_load, pc.equal(commit, pa.scalar(point.commit_part)))
            result = pc.if_else(pc.fill_null(at, False), index, result)
        past = pc.and_(
            pc.invert(pc.fill_null(from_load, True)),
            pc.fill_null(pc.greater_equal(commit, first), False),
        )
        return pc.if_else(past, -1, result).cast(pa.int64())

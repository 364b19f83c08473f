"""The batcher: decoded events in, pipeline batches out, never splitting a transaction.

Pure and clock-injected: the runtimes feed it what the decoder produced (`add`) and ask for a
batch (`poll`) after each feed and on a timer. A batch closes when it holds `max_events`
(size) or its oldest event has waited `max_latency_ms` (latency), and it only ever contains
whole source transactions: a transaction is complete when its END marker arrived or, for a
source that sends no markers, when a different transaction started after it. Under backlog
(batches keep closing on size) the effective size doubles up to a cap, so each commit carries
more events; when batches close on latency again it halves back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION, TX_ID
from tidemark.kernel.model import TableChanges
from tidemark.kernel.table_ops import TableOp
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.transactions import Cut, plan_cut

logger = logging.getLogger(__name__)

ClosedBy = Literal["size", "latency", "force"]


class TxMarkerLike(Protocol):
    """What the batcher reads from the decoder's `TxMarker`."""

    @property
    def status(self) -> str: ...  # "BEGIN" | "END"
    @property
    def tx_id(self) -> str: ...


class DecodedLike(Protocol):
    """What the batcher reads from the decoder's `DecodedBatch` (connectors/decode)."""

    @property
    def changes(self) -> Mapping[str, TableChanges]: ...
    @property
    def transactions(self) -> Sequence[TxMarkerLike]: ...
    @property
    def dead_letters(self) -> Sequence[Any]: ...
    @property
    def last_position(self) -> str | None: ...


@dataclass(frozen=True)
class PipelineBatch:
    """Whole transactions from one or more sources, ready for the core and the lake.

    Attributes:
        batch_id: consecutive from `first_batch_id`; the lake's Delta txn version.
        changes: lake table -> its events, in position order.
        positions: source -> highest position the batch covers (acknowledge up to it once
            the lake commit returned).
        event_count: events in the batch.
        tx_count: distinct source transactions in the batch.
        dead_letters: undecodable records that arrived since the previous batch.
        closed_by: what closed it: "size", "latency" or "force" (`poll(force=True)`).
        ops: table-wide changes (DDL, TRUNCATE) in position order; the runtime applies
            each between the events before and after it, each step under its own batch id
            (`batch_id` .. `last_batch_id`, reserved here).
    """

    batch_id: int
    changes: dict[str, TableChanges]
    positions: dict[str, str]
    event_count: int
    tx_count: int
    dead_letters: tuple[Any, ...] = ()
    closed_by: ClosedBy = "size"
    ops: tuple[TableOp, ...] = ()

    @property
    def last_batch_id(self) -> int:
        """The highest id reserved for this batch: one per op and one per stretch of
        events around them."""
        return self.batch_id + 2 * len(self.ops)


@dataclass
class _Chunk:
    """One `add` call's events (and table ops), until all of them went out in batches."""

    source: str
    arrived: float
    tables: dict[str, TableChanges]
    ops: list[TableOp] = field(default_factory=list)

    @property
    def event_count(self) -> int:
        return sum(t.events.num_rows for t in self.tables.values()) + len(self.ops)


@dataclass
class _SourceState:
    marker_mode: bool = False  # once a source sent a marker, only END completes a tx
    ended: set[str] = field(default_factory=set)
    begun: set[str] = field(default_factory=set)  # BEGIN seen, END not yet
    last_seen: str | None = None  # highest position decoded (events, markers, heartbeats)


class Batcher:
    """Accumulates decoded events into transaction-whole batches.

    Args:
        max_events: close a batch at this many events (the starting effective size).
        max_latency_ms: close a batch once its oldest event waited this long.
        max_events_cap: the most the effective size may grow to under backlog
            (default 8 x max_events).
        first_batch_id: the id of the first batch (the lake's last batch id + 1).
        clock: monotonic seconds; injected so tests control time.
    """

    def __init__(
        self,
        *,
        max_events: int,
        max_latency_ms: int,
        max_events_cap: int | None = None,
        first_batch_id: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_events < 1 or max_latency_ms < 0:
            raise ValueError("max_events must be >= 1 and max_latency_ms >= 0")
        self.max_events = max_events
        self.max_latency = max_latency_ms / 1000
        self.cap = max(max_events, max_events_cap or 8 * max_events)
        self.effective_max = max_events
        self._clock = clock
        self._next_id = first_batch_id
        self._chunks: list[_Chunk] = []
        self._sources: dict[str, _SourceState] = {}
        self._dead_letters: list[Any] = []
        self._size_streak = 0

    @property
    def next_batch_id(self) -> int:
        """The id the next batch will get."""
        return self._next_id

    def reserve_id(self) -> int:
        """Take the next batch id for a batch made elsewhere (a runtime's checkpoint)."""
        self._next_id += 1
        return self._next_id - 1

    @property
    def pending_events(self) -> int:
        """Events held, complete or not."""
        return sum(c.event_count for c in self._chunks)

    def quiet_position(self, source: str) -> str | None:
        """The source's highest decoded position when nothing of it is held or open.

        Heartbeats and markers advance a source without events; once every batch handed out
        is committed, the runtime may acknowledge up to this position (so Postgres can
        recycle WAL on a quiet table). None while events are held or a transaction is open.
        """
        state = self._sources.get(source)
        if state is None or state.begun or any(c.source == source for c in self._chunks):
            return None
        return state.last_seen

    def add(self, decoded: DecodedLike, *, source: str) -> None:
        """Take one decoded chunk from `source` (positions must keep increasing per source)."""
        state = self._sources.setdefault(source, _SourceState())
        for marker in decoded.transactions:
            state.marker_mode = True
            if marker.status == "END":
                state.ended.add(marker.tx_id)
                state.begun.discard(marker.tx_id)
            elif marker.status == "BEGIN":
                state.begun.add(marker.tx_id)
        if decoded.last_position is not None and (
            state.last_seen is None or decoded.last_position > state.last_seen
        ):
            state.last_seen = decoded.last_position
        self._dead_letters.extend(decoded.dead_letters)
        tables = {name: t for name, t in decoded.changes.items() if t.events.num_rows > 0}
        ops = list(getattr(decoded, "ops", ()) or ())
        if tables or ops:
            self._chunks.append(_Chunk(source, self._clock(), tables, ops))

    def due(self, *, force: bool = False, latency: bool = True) -> bool:
        """Whether `poll` may return a batch now (it may still hold back an open transaction)."""
        held = self.pending_events
        if held == 0:
            return False
        if force or held >= self.effective_max:
            return True
        return latency and self._clock() - min(c.arrived for c in self._chunks) >= self.max_latency

    def poll(self, *, force: bool = False, latency: bool = True) -> PipelineBatch | None:
        """The next batch if one is due (or `force`), else None.

        Only complete transactions go out; the rest stays for a later poll. A transaction
        larger than the effective size goes out whole in a batch of its own. `latency=False`
        closes on size only: the runtime passes it while the source already holds more
        events, since a batch closed early then only adds commits to a backlog.
        """
        held = self.pending_events
        if held == 0:
            return None
        age = self._clock() - min(c.arrived for c in self._chunks)
        if force:
            closed_by: ClosedBy = "force"
        elif held >= self.effective_max:
            closed_by = "size"
        elif latency and age >= self.max_latency:
            closed_by = "latency"
        else:
            return None
        cuts, count, ready = self._plan(None if force else self.effective_max)
        if count == 0:
            return None
        if closed_by == "size" and ready < self.effective_max:
            if not latency or age < self.max_latency:
                return None  # what is full is mostly an open transaction: wait for its END
            closed_by = "latency"
        batch = self._take(cuts, closed_by)
        self._adapt(closed_by)
        return batch

    def _adapt(self, closed_by: ClosedBy) -> None:
        if closed_by == "size":
            self._size_streak += 1
            if self._size_streak >= 2 and self.effective_max < self.cap:
                self.effective_max = min(self.cap, self.effective_max * 2)
                logger.info("backlog: batch size grows to %d events", self.effective_max)
        else:
            self._size_streak = 0
            if self.effective_max > self.max_events:
                self.effective_max = max(self.max_events, self.effective_max // 2)
                logger.info("caught up: batch size shrinks to %d events", self.effective_max)

    def _plan(self, limit: int | None) -> tuple[dict[str, str | None], int, int]:
        """Per source, the first position to hold back (None: nothing); the events that go
        out; and the events that could go out (complete transactions) without the limit."""
        cuts: dict[str, str | None] = {}
        total = ready_total = 0
        budget = limit
        for source in dict.fromkeys(c.source for c in self._chunks):
            if budget == 0:
                break
            cut = self._source_cut(source, budget)
            ready_total += cut.ready
            if cut.count == 0:
                continue
            cuts[source] = cut.position
            total += cut.count
            if budget is not None:
                budget = max(0, budget - cut.count)
        return cuts, total, ready_total

    def _take(self, cuts: Mapping[str, str | None], closed_by: ClosedBy) -> PipelineBatch:
        """Move the planned events out of the buffer into a batch."""
        out: dict[str, list[TableChanges]] = {}
        table_source: dict[str, str] = {}
        ops: list[tuple[str, TableOp]] = []
        kept: list[_Chunk] = []
        for chunk in self._chunks:
            if chunk.source not in cuts:
                kept.append(chunk)
                continue
            cut = cuts[chunk.source]
            rest: dict[str, TableChanges] = {}
            for name, changes in chunk.tables.items():
                take, leave = _split(changes, cut)
                if take is not None:
                    out.setdefault(name, []).append(take)
                    table_source[name] = chunk.source
                if leave is not None:
                    rest[name] = leave
            ops += [(chunk.source, op) for op in chunk.ops if cut is None or op.position < cut]
            later = [op for op in chunk.ops if cut is not None and op.position >= cut]
            if rest or later:
                kept.append(_Chunk(chunk.source, chunk.arrived, rest, later))
        self._chunks = kept
        return self._emit(out, table_source, cuts, closed_by, ops)

    def _source_cut(self, source: str, limit: int | None) -> Cut:
        state = self._sources[source]
        parts = [t.events for c in self._chunks if c.source == source for t in c.tables.values()]
        ops = [op for c in self._chunks if c.source == source for op in c.ops]
        position = pa.concat_arrays(
            [
                *(arrays.flat(p.column(POSITION)).cast(pa.string()) for p in parts),
                pa.array([op.position for op in ops], pa.string()),
            ]
        )
        tx = pa.concat_arrays(
            [*(_tx_column(p) for p in parts), pa.array([op.tx_id for op in ops], pa.string())]
        )
        return plan_cut(position, tx, marker_mode=state.marker_mode, ended=state.ended, limit=limit)

    def _emit(
        self,
        out: dict[str, list[TableChanges]],
        table_source: Mapping[str, str],
        cuts: Mapping[str, str | None],
        closed_by: ClosedBy,
        ops: Sequence[tuple[str, TableOp]] = (),
    ) -> PipelineBatch:
        changes: dict[str, TableChanges] = {}
        positions: dict[str, str] = {}
        tx_ids: set[str] = set()
        for name, parts in out.items():
            events = pa.concat_tables([p.events for p in parts], promote_options="permissive")
            changes[name] = TableChanges(name, parts[0].key_columns, events)
            tx_ids.update(t for t in pc.unique(_tx_column(events)).to_pylist() if t is not None)
            source = table_source[name]
            highest = pc.max(events.column(POSITION)).as_py()
            if source not in positions or highest > positions[source]:
                positions[source] = highest
        for source, op in ops:
            tx_ids.update([op.tx_id] if op.tx_id is not None else [])
            if source not in positions or op.position > positions[source]:
                positions[source] = op.position
        for source, cut in cuts.items():
            state = self._sources[source]
            quiet = cut is None and not state.begun  # nothing held back, no transaction open
            if quiet and state.last_seen is not None and state.last_seen > positions[source]:
                positions[source] = state.last_seen  # markers and heartbeats count too
            state.ended.intersection_update(self._held_tx_ids(source))
        batch = PipelineBatch(
            batch_id=self._next_id,
            changes=changes,
            positions=positions,
            event_count=sum(t.events.num_rows for t in changes.values()),
            tx_count=len(tx_ids),
            dead_letters=tuple(self._dead_letters),
            closed_by=closed_by,
            ops=tuple(sorted((op for _, op in ops), key=lambda op: op.position)),
        )
        self._next_id = batch.last_batch_id + 1
        self._dead_letters = []
        logger.debug(
            "batch %d closed by %s: %d events, %d transactions",
            batch.batch_id,
            closed_by,
            batch.event_count,
            batch.tx_count,
        )
        return batch

    def _held_tx_ids(self, source: str) -> set[str]:
        held: set[str] = set()
        for chunk in self._chunks:
            if chunk.source == source:
                for t in chunk.tables.values():
                    held.update(x for x in pc.unique(_tx_column(t.events)).to_pylist() if x)
                held.update(op.tx_id for op in chunk.ops if op.tx_id)
        return held


def _tx_column(events: pa.Table) -> pa.Array:
    if TX_ID in events.column_names:
        return arrays.flat(events.column(TX_ID)).cast(pa.string())
    return pa.nulls(events.num_rows, pa.string())


def _split(
    changes: TableChanges, cut: str | None
) -> tuple[TableChanges | None, TableChanges | None]:
    """The events before `cut` and those from it on (None for an empty side)."""
    events = changes.events
    if cut is None:
        return changes, None
    before = pc.less(events.column(POSITION), pa.scalar(cut, pa.string()))
    take, leave = events.filter(before), events.filter(pc.invert(before))
    return (
        TableChanges(changes.table, changes.key_columns, take) if take.num_rows else None,
        TableChanges(changes.table, changes.key_columns, leave) if leave.num_rows else None,
    )

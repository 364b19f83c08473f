"""The batcher: decoded events in, pipeline batches out, never splitting a transaction.

Pure and clock-injected: the runtimes feed it what the decoder produced (`add`) and ask for a
batch (`poll`) after each feed and on a timer. A batch closes when it holds `max_events`
(size) or its oldest event has waited `max_latency_ms` (latency), and it only ever contains
whole source transactions: a transaction is complete when its END marker arrived or, for a
source that sends no markers, when a different transaction started after it. Under backlog
(batches keep closing on size) the effective size doubles up to a cap, so each commit carries
more events; when batches close on latency again it halves back.

A transaction too big to hold (`part_events`) is the exception: it goes out in parts, each
marked in its batch (`PipelineBatch.split`), and no batch counts as transaction-consistent
(`PipelineBatch.consistent`) until its last part went out; positions to acknowledge never
include a part (docs/pipeline.md, "Transactions of any size").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION, TX_ID
from tidemark.kernel.model import TableChanges
from tidemark.kernel.table_ops import TableOp
from tidemark.stream_processors.batch import ClosedBy, DecodedLike, PipelineBatch
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.transactions import Cut, plan_cut

logger = logging.getLogger(__name__)

__all__ = ["Batcher", "ClosedBy", "DecodedLike", "PipelineBatch"]


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
    split: str | None = None  # a transaction going out in parts
    split_position: str | None = None  # the highest position of it handed out
    split_done: bool = False  # its END arrived (or, without markers, another one started)


class Batcher:
    """Accumulates decoded events into transaction-whole batches.

    Args:
        max_events: close a batch at this many events (the starting effective size).
        max_latency_ms: close a batch once its oldest event waited this long.
        max_events_cap: the most the effective size may grow to under backlog
            (default 8 x max_events).
        first_batch_id: the id of the first batch (the lake's last batch id + 1).
        part_events: an open transaction holding this many events goes out in parts of
            this size (None: never; it is held whole however big it grows).
        clock: monotonic seconds; injected so tests control time.
    """

    def __init__(
        self,
        *,
        max_events: int,
        max_latency_ms: int,
        max_events_cap: int | None = None,
        first_batch_id: int = 1,
        part_events: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_events < 1 or max_latency_ms < 0 or (part_events is not None and part_events < 1):
            raise ValueError("max_events and part_events must be >= 1, max_latency_ms >= 0")
        self.part_events = part_events
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

    @property
    def splitting(self) -> bool:
        """True while a transaction went out in part and its last part did not yet."""
        return any(state.split is not None for state in self._sources.values())

    def quiet_position(self, source: str) -> str | None:
        """The source's highest decoded position when nothing of it is held or open.

        Heartbeats and markers advance a source without events; once every batch handed out
        is committed, the runtime may acknowledge up to this position (so Postgres can
        recycle WAL on a quiet table). None while events are held or a transaction is open.
        """
        state = self._sources.get(source)
        if state is None or state.begun or state.split is not None:
            return None
        if any(c.source == source for c in self._chunks):
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
                state.split_done = state.split_done or marker.tx_id == state.split
            elif marker.status == "BEGIN":
                state.begun.add(marker.tx_id)
        if decoded.last_position is not None and (
            state.last_seen is None or decoded.last_position > state.last_seen
        ):
            state.last_seen = decoded.last_position
        self._dead_letters.extend(decoded.dead_letters)
        tables = {name: t for name, t in decoded.changes.items() if t.events.num_rows > 0}
        ops = list(getattr(decoded, "ops", ()) or ())
        if state.split is not None and not state.marker_mode and not state.split_done:
            # Without markers a transaction ends when any other event follows it (as
            # `complete_events` has it).
            state.split_done = any(op.tx_id != state.split for op in ops) or any(
                pc.any(pc.fill_null(pc.not_equal(_tx_column(t.events), state.split), True)).as_py()
                for t in tables.values()
            )
        if tables or ops:
            self._chunks.append(_Chunk(source, self._clock(), tables, ops))

    def due(self, *, force: bool = False, latency: bool = True) -> bool:
        """Whether `poll` may return a batch now (it may still hold back an open transaction)."""
        held = self.pending_events
        if self._ended_splits():
            return True  # a split transaction's END came after its last part: record it
        if held == 0:
            return False
        if force or held >= self.effective_max:
            return True
        return latency and self._clock() - min(c.arrived for c in self._chunks) >= self.max_latency

    def poll(
        self, *, force: bool = False, latency: bool = True, full: bool = False
    ) -> PipelineBatch | None:
        """The next batch if one is due (or `force`), else None.

        Only complete transactions go out; the rest stays for a later poll. A transaction
        larger than the effective size goes out whole in a batch of its own. `latency=False`
        closes on size only: the runtime passes it while the source already holds more
        events, since a batch closed early then only adds commits to a backlog. `full`: the
        runtime can hold no more (with `force`); if no whole transaction can go, the open
        ones at the head of each source go out in parts whatever their size (several
        sources' open transactions together can fill what may be held).
        """
        if self._ended_splits():
            return self._take({}, "force")  # only the END of a split transaction: record it
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
        cuts, count, ready, big = self._plan(None if force else self.effective_max)
        if count == 0 and full and self.part_events is not None:
            cuts, count, ready, big = self._plan(self.effective_max, part=1)
        if count == 0:
            return None
        if closed_by == "size" and ready < self.effective_max and not big:
            if not latency or age < self.max_latency:
                return None  # what is full is mostly an open transaction: wait for its END
            closed_by = "latency"
        batch = self._take(cuts, closed_by)
        self._adapt(closed_by)
        return batch

    def _ended_splits(self) -> bool:
        """A split transaction has ended and nothing of it is held: a batch must say so (it
        goes first, alone, so that a source never has two split transactions at once)."""
        return any(
            state.split is not None
            and state.split_done
            and state.split not in self._held_tx_ids(source)
            for source, state in self._sources.items()
        )

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

    def _plan(
        self, limit: int | None, *, part: int | None = None
    ) -> tuple[dict[str, str | None], int, int, bool]:
        """Per source, the first position to hold back (None: nothing); the events that go
        out; the events that could go out (complete transactions) without the limit; and
        whether an open transaction is too big to wait for (it goes out in parts)."""
        cuts: dict[str, str | None] = {}
        total = ready_total = 0
        big = False
        budget = limit
        for source in dict.fromkeys(c.source for c in self._chunks):
            if budget == 0:
                break
            cut = self._source_cut(source, budget, part or self.part_events)
            ready_total += cut.ready
            big = big or (self.part_events is not None and cut.open_events >= self.part_events)
            if cut.count == 0:
                continue
            cuts[source] = cut.position
            if cut.split is not None:
                state = self._sources[source]
                if state.split not in (None, cut.split):
                    raise AssertionError(f"source {source}: two split transactions at once")
                state.split = cut.split
            total += cut.count
            if budget is not None:
                budget = max(0, budget - cut.count)
        return cuts, total, ready_total, big

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

    def _source_cut(self, source: str, limit: int | None, part: int | None) -> Cut:
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
        return plan_cut(
            position,
            tx,
            marker_mode=state.marker_mode,
            ended=state.ended,
            limit=limit,
            part=part,
        )

    def _emit(
        self,
        out: dict[str, list[TableChanges]],
        table_source: Mapping[str, str],
        cuts: Mapping[str, str | None],
        closed_by: ClosedBy,
        ops: Sequence[tuple[str, TableOp]] = (),
    ) -> PipelineBatch:
        still_open = self._open_splits()
        changes: dict[str, TableChanges] = {}
        positions: dict[str, str] = {}
        split: dict[str, str] = {}
        tx_ids: set[str] = set()
        for name, parts in out.items():
            events = pa.concat_tables([p.events for p in parts], promote_options="permissive")
            changes[name] = TableChanges(name, parts[0].key_columns, events)
            tx = _tx_column(events)
            tx_ids.update(t for t in pc.unique(tx).to_pylist() if t is not None)
            source = table_source[name]
            position = arrays.flat(events.column(POSITION))
            state = self._sources[source]
            if state.split is not None:
                mine = pc.fill_null(pc.equal(tx, state.split), False)
                if pc.any(mine).as_py():
                    split[source] = state.split
                    top = pc.max(position.filter(mine)).as_py()
                    state.split_position = max(state.split_position or top, top)
                if source in still_open:  # a part: never acknowledged before its end
                    position = position.filter(pc.invert(mine))
            highest = pc.max(position).as_py() if len(position) else None
            if highest is not None and (source not in positions or highest > positions[source]):
                positions[source] = highest
        for source, op in ops:
            tx_ids.update([op.tx_id] if op.tx_id is not None else [])
            state = self._sources[source]
            if state.split is not None and op.tx_id == state.split:
                split[source] = state.split
                if source in still_open:  # a part: never acknowledged before its end
                    continue
            if source not in positions or op.position > positions[source]:
                positions[source] = op.position
        for source, state in self._sources.items():
            if state.split is None or source in still_open:
                continue
            split[source] = state.split  # its last part (or only its END) is in this batch
            if state.split_position is not None and state.split_position > positions.get(
                source, ""
            ):
                positions[source] = state.split_position
            state.split, state.split_position, state.split_done = None, None, False
        for source, cut in cuts.items():
            state = self._sources[source]
            # nothing held back, no transaction open: markers and heartbeats count too
            quiet = cut is None and not state.begun and source not in still_open
            if (
                quiet
                and state.last_seen is not None
                and state.last_seen > positions.get(source, "")
            ):
                positions[source] = state.last_seen
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
            split=split,
            consistent=not still_open,
        )
        self._next_id = batch.last_batch_id + 1
        self._dead_letters = []
        logger.debug(
            "batch %d closed by %s: %d events, %d transactions%s",
            batch.batch_id,
            closed_by,
            batch.event_count,
            batch.tx_count,
            f", parts of {split}" if split else "",
        )
        return batch

    def _open_splits(self) -> set[str]:
        """Sources whose split transaction is still open once the batch being cut is out."""
        return {
            source
            for source, state in self._sources.items()
            if state.split is not None
            and (not state.split_done or state.split in self._held_tx_ids(source))
        }

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

"""Property tests: however the stream is chunked and timed, the batcher emits every event
once, in order, in whole transactions; and batcher + core give the same lake as one batch."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.batching_support import Clock, Decoded, Marker, chunk, p
from tests.milestoning_histories import histories, replay, to_rows
from tests.milestoning_support import MemoryLake, events, ts
from tidemark.kernel.columns import POSITION, TX_ID
from tidemark.kernel.model import TableChanges
from tidemark.stream_processors.batching import Batcher
from tidemark.stream_processors.milestoning.core import milestone

PROFILE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TABLES = ["s.public.a", "s.public.b"]


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[tuple], bool]:
    """A source stream: ("event", table, position, tx) and ("marker", status, position, tx)."""
    markers = draw(st.booleans())
    items: list[tuple] = []
    position = 0
    for t in range(draw(st.integers(0, 12))):
        tx = None if draw(st.integers(0, 5)) == 0 else f"tx{t}"
        if tx and markers:
            position += 1
            items.append(("marker", "BEGIN", position, tx))
        for _ in range(draw(st.integers(1, 6))):
            position += 1
            items.append(("event", draw(st.sampled_from(TABLES)), position, tx))
        if tx and markers:
            position += 1
            items.append(("marker", "END", position, tx))
    return items, markers


def to_chunk(items: list[tuple]) -> Decoded:
    evs = [(table, pos, tx) for kind, table, pos, tx in items if kind == "event"]
    marks = [Marker(status, tx) for kind, status, _, tx in items if kind == "marker"]
    return chunk(*evs, markers=marks, last=p(max(i[2] for i in items)))


@PROFILE
@given(stream=streams(), data=st.data())
def test_every_event_once_in_order_and_transactions_whole(stream, data):
    items, markers = stream
    clock = Clock()
    batcher = Batcher(
        max_events=data.draw(st.integers(1, 8)),
        max_latency_ms=500,
        max_events_cap=data.draw(st.integers(1, 20)),
        clock=clock,
    )
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(items)), max_size=8))))
    batches = []
    for start, end in zip([0, *cuts], [*cuts, len(items)], strict=False):
        if start < end:
            batcher.add(to_chunk(items[start:end]), source="s")
        clock.now += data.draw(st.sampled_from([0.0, 0.1, 0.6]))
        while (batch := batcher.poll()) is not None:
            batches.append(batch)
    while (batch := batcher.poll(force=True)) is not None:
        batches.append(batch)

    assert [b.batch_id for b in batches] == list(range(1, len(batches) + 1))
    emitted = {table: [] for table in TABLES}
    tx_batches: dict[str, set[int]] = {}
    last_positions = []
    for b in batches:
        for table, changes in b.changes.items():
            positions = changes.events.column(POSITION).to_pylist()
            emitted[table] += positions
            for tx in changes.events.column(TX_ID).to_pylist():
                if tx is not None:
                    tx_batches.setdefault(tx, set()).add(b.batch_id)
        last_positions.append(b.positions["s"])
        assert b.event_count == sum(c.events.num_rows for c in b.changes.values())
    assert all(len(ids) == 1 for ids in tx_batches.values()), "a transaction was split"
    assert last_positions == sorted(last_positions)
    held = batcher.pending_events
    sent = [i for i in items if i[0] == "event"]
    if markers:
        assert held == 0
    else:  # without markers the newest transaction may still go on: it stays
        newest = sent[-1][3] if sent else None
        assert held == (sum(1 for i in sent if i[3] == newest) if newest else 0)
    for table in TABLES:
        expected = [p(i[2]) for i in sent if i[1] == table]
        assert emitted[table] == expected[: len(emitted[table])]
        if held == 0:
            assert emitted[table] == expected


@PROFILE
@given(history=histories(), data=st.data())
def test_batcher_then_core_equals_replay(history, data):
    """The whole pure pipeline: chunks -> batcher -> core -> lake, versus a plain replay."""
    rows = to_rows(history)
    if not rows:
        return
    table = events(rows)
    clock = Clock()
    batcher = Batcher(max_events=data.draw(st.integers(1, 10)), max_latency_ms=100, clock=clock)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(rows)), max_size=6))))
    lake = MemoryLake()

    def commit(batch) -> None:
        changes = batch.changes["shop.public.t"]
        keys = {(k,) for k in changes.events.column("id").to_pylist()}
        result = milestone(
            changes, lake.current(keys), batch_id=batch.batch_id, ingested_at=datetime.now(UTC)
        )
        lake.apply(result)

    for start, end in zip([0, *cuts], [*cuts, len(rows)], strict=False):
        if start >= end:
            continue
        part = table.slice(start, end - start)
        decoded = Decoded(
            {"shop.public.t": TableChanges("shop.public.t", ("id",), part)},
            last_position=part.column(POSITION)[-1].as_py(),
        )
        batcher.add(decoded, source="shop")
        clock.now += data.draw(st.sampled_from([0.0, 0.2]))
        while (batch := batcher.poll()) is not None:
            commit(batch)
    while (batch := batcher.poll(force=True)) is not None:
        commit(batch)
    # No markers: the newest transaction is held back; the lake equals the replay without it.
    held = batcher.pending_events
    done = history[: len(history) - held]
    assert lake.live_rows() == replay(done)
    for second in sorted({e.second for e in done}):
        assert lake.as_of(ts(second)) == replay(done, second)

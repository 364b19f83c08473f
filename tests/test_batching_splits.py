"""Transactions too big to hold go out in parts (docs/pipeline.md, "Transactions of any size").

The batcher with a fake clock and hand-built chunks: a part is cut once an open transaction
holds `part_events`; no part is ever covered by the positions to acknowledge; the batch that
carries the last part (or only the END) is the first consistent one again. A property test
checks the same over any chunking, timing and part size.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.batching_support import Clock, Marker, chunk, ids, p, tx
from tests.test_batching_properties import streams, to_chunk
from tidemark.kernel.columns import POSITION, TX_ID
from tidemark.stream_processors.batching import Batcher

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_transaction_bigger_than_a_part_goes_out_in_parts():
    clock = Clock()
    b = Batcher(max_events=4, max_latency_ms=1000, max_events_cap=4, part_events=6, clock=clock)
    b.add(chunk(*tx("t0", 1, 2), markers=[Marker("BEGIN", "t0"), Marker("END", "t0")]), source="s")
    b.add(chunk(*tx("t1", 3, 4, 5, 6, 7), markers=[Marker("BEGIN", "t1")]), source="s")
    first = b.poll()  # 7 held, over size; t1 (5 events) is open but not yet part-sized
    assert first is None or ids(first) == [1, 2]
    if first is None:
        b.add(chunk(*tx("t1", 8), markers=[]), source="s")
        first = b.poll()  # t1 now holds 6: t0 goes first, whole, and only t0 is acknowledged
    assert ids(first) == [1, 2] and first.positions == {"s": p(2)}
    assert first.split == {} and first.consistent
    b.add(chunk(*tx("t1", 9, 10, 11)), source="s")
    part = b.poll()
    assert ids(part) == [3, 4, 5, 6]  # a part is at most a batch (the effective size)
    assert part.split == {"s": "t1"} and not part.consistent
    assert part.positions == {}  # nothing of an open transaction is ever acknowledged
    assert b.splitting and b.quiet_position("s") is None
    clock.now += 10
    assert b.poll() is None  # the rest (5 events) waits for more or for the END, however late
    assert b.poll(force=True) is None  # a stop commits nothing more of an open transaction
    b.add(chunk(*tx("t1", 12), markers=[Marker("END", "t1")], last=p(13)), source="s")
    last = b.poll()
    assert ids(last) == [7, 8, 9, 10, 11, 12]  # whole now: the rest goes out in one batch
    assert last.split == {"s": "t1"} and last.consistent
    assert last.positions == {"s": p(13)}  # whole now: acknowledged through its END
    assert not b.splitting and b.pending_events == 0


def test_an_end_after_the_last_part_closes_the_transaction_in_an_empty_batch():
    clock = Clock()
    b = Batcher(max_events=3, max_latency_ms=1000, part_events=3, clock=clock)
    b.add(chunk(*tx("t1", 1, 2, 3), markers=[Marker("BEGIN", "t1")]), source="s")
    part = b.poll()
    assert ids(part) == [1, 2, 3] and not part.consistent and part.positions == {}
    assert b.pending_events == 0 and not b.due()
    b.add(chunk(markers=[Marker("END", "t1")], last=p(4)), source="s")
    assert b.due()
    end = b.poll()
    assert end is not None and end.event_count == 0 and end.changes == {}
    assert end.split == {"s": "t1"} and end.consistent
    assert end.positions == {"s": p(3)}
    assert b.poll() is None and not b.splitting
    assert b.quiet_position("s") == p(4)


def test_without_markers_a_split_ends_when_another_transaction_starts():
    clock = Clock()
    b = Batcher(max_events=2, max_latency_ms=1000, part_events=2, clock=clock)
    b.add(chunk(*tx("t1", 1, 2, 3)), source="s")
    part = b.poll()
    assert ids(part) == [1, 2] and part.split == {"s": "t1"} and not part.consistent
    b.add(chunk(*tx("t2", 4)), source="s")  # t1 is complete now; t2 may still go on
    clock.now += 2
    last = b.poll()
    assert ids(last) == [3] and last.split == {"s": "t1"} and last.consistent
    assert last.positions == {"s": p(3)}
    assert b.pending_events == 1


def test_without_part_events_nothing_is_ever_split():
    b = Batcher(max_events=2, max_latency_ms=0, clock=Clock())
    b.add(chunk(*tx("t1", *range(1, 50)), markers=[Marker("BEGIN", "t1")]), source="s")
    assert b.poll() is None and b.poll(force=True) is None


def test_parts_of_one_source_leave_other_sources_whole():
    clock = Clock()
    b = Batcher(max_events=3, max_latency_ms=1000, part_events=3, clock=clock)
    b.add(chunk(*tx("a1", 1, 2, 3, 4), markers=[Marker("BEGIN", "a1")]), source="a")
    b.add(chunk(*tx("b1", 10, 11, table="s.public.b"), markers=[Marker("END", "b1")]), source="b")
    seen: dict[str, list] = {}
    batches = []
    for _ in range(2):
        while (batch := b.poll()) is not None:
            batches.append(batch)
            for table, changes in batch.changes.items():
                seen.setdefault(table, []).extend(changes.events.column("id").to_pylist())
        clock.now += 2  # b1 then closes on latency
    assert seen == {"s.public.a": [1, 2, 3], "s.public.b": [10, 11]}
    assert all(not batch.consistent for batch in batches)  # a1 is still open
    assert all("a" not in batch.positions for batch in batches)
    assert any(batch.positions.get("b") == p(11) for batch in batches)


def test_when_nothing_more_may_be_held_open_transactions_of_any_size_go_in_parts():
    """Three sources each hold an open transaction under the part size, and together all
    the runner may hold: only parts can make room (`full`), or the runner would spin."""
    b = Batcher(max_events=4, max_latency_ms=1000, part_events=10, clock=Clock())
    for source in ("a", "b", "c"):
        events = tx(f"{source}1", 1, 2, 3, 4, 5, table=f"s.public.{source}")
        b.add(chunk(*events, markers=[Marker("BEGIN", f"{source}1")]), source=source)
    assert b.poll(force=True) is None  # a stop never commits part of a small transaction
    batch = b.poll(force=True, full=True)
    assert batch is not None and batch.event_count == 4 and not batch.consistent
    assert batch.split == {"a": "a1"} and batch.positions == {}
    while (more := b.poll(force=True, full=True)) is not None:
        assert not more.consistent and more.positions == {}
    assert b.pending_events == 0 and b.splitting
    for source in ("a", "b", "c"):
        b.add(chunk(markers=[Marker("END", f"{source}1")]), source=source)
    end = b.poll()  # one batch records every END that came after its last part
    assert end is not None and end.event_count == 0 and end.consistent
    assert end.split == {"a": "a1", "b": "b1", "c": "c1"}
    assert end.positions == {"a": p(5), "b": p(5), "c": p(5)}
    assert b.poll() is None and not b.splitting


@PROFILE
@given(stream=streams(), data=st.data())
def test_parts_never_lose_double_or_acknowledge_an_open_transaction(stream, data):
    items, markers = stream
    clock = Clock()
    batcher = Batcher(
        max_events=data.draw(st.integers(1, 8)),
        max_latency_ms=500,
        max_events_cap=data.draw(st.integers(1, 20)),
        part_events=data.draw(st.integers(1, 6)),
        clock=clock,
    )
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(items)), max_size=8))))
    batches = []
    for start, end in zip([0, *cuts], [*cuts, len(items)], strict=False):
        if start < end:
            batcher.add(to_chunk(items[start:end]), source="s")
        clock.now += data.draw(st.sampled_from([0.0, 0.1, 0.6]))
        while (batch := batcher.poll(force=data.draw(st.booleans()))) is not None:
            batches.append(batch)
    while (batch := batcher.poll(force=True)) is not None:
        batches.append(batch)

    sent = [i for i in items if i[0] == "event"]
    where: dict[str, int] = {}  # event position -> batch id
    tx_batches: dict[str, list[int]] = {}
    for b in batches:
        for changes in b.changes.values():
            for position, tx_id in zip(
                changes.events.column(POSITION).to_pylist(),
                changes.events.column(TX_ID).to_pylist(),
                strict=True,
            ):
                assert position not in where, "an event went out twice"
                where[position] = b.batch_id
                if tx_id is not None and b.batch_id not in tx_batches.get(tx_id, []):
                    tx_batches.setdefault(tx_id, []).append(b.batch_id)
    # every event once, in source order (what is not out is the newest, still open)
    order = [where[p(i[2])] for i in sent if p(i[2]) in where]
    assert order == sorted(order)
    assert len(where) + batcher.pending_events == len(sent)
    by_id = {b.batch_id: b for b in batches}
    for tx_id, ids_ in tx_batches.items():
        if len(ids_) > 1:  # split: consecutive batches, each marked, open until the last
            assert ids_ == list(range(ids_[0], ids_[-1] + 1))
            assert all(by_id[i].split.get("s") == tx_id for i in ids_)
            assert all(not by_id[i].consistent for i in ids_[:-1])
    acked = ""
    for b in batches:
        position = b.positions.get("s")
        if position is None:
            continue
        assert position >= acked
        acked = position
        # acknowledging up to it is safe: every event at or below it is out already
        assert all(where.get(p(i[2]), 1 << 30) <= b.batch_id for i in sent if p(i[2]) <= position)
        if b.consistent:
            # and a consistent batch ends every transaction it (or an earlier one) touched
            for tx_id, ids_ in tx_batches.items():
                if ids_[0] <= b.batch_id:
                    rest = [i for i in sent if i[3] == tx_id and p(i[2]) not in where]
                    assert ids_[-1] <= b.batch_id and not rest
    if markers and sent:
        assert batcher.pending_events == 0 and not batcher.splitting
        assert batches[-1].consistent


def test_gold_pins_only_at_the_consistent_cut():
    """Gold models pin their inputs when told of a batch: never between the parts of a
    transaction committed in parts (the lake is not transaction-consistent there)."""
    from datetime import UTC, datetime

    from tidemark.pipeline import gold_on_batch
    from tidemark.stream_processors.embedded.reports import BatchReport

    class Pins:
        def __init__(self) -> None:
            self.told: list[tuple[int, set[str]]] = []

        def on_batch(self, batch_id, touched) -> None:
            self.told.append((batch_id, set(touched)))

    gold, seen = Pins(), []
    on_batch = gold_on_batch(gold, seen.append)
    now = datetime.now(UTC)
    for batch_id, tables, consistent in [
        (1, {"a": 3}, True),
        (2, {"a": 5}, False),  # parts of a transaction over a and b
        (3, {"b": 5}, False),
        (4, {"b": 1}, True),  # its last part
    ]:
        on_batch(
            BatchReport(batch_id, 1, 1, tables, 0, "size", now, now, None, consistent=consistent)
        )
    assert gold.told == [(1, {"a"}), (4, {"a", "b"})]
    assert [r.batch_id for r in seen] == [1, 2, 3, 4]


def test_a_table_op_inside_a_split_transaction_is_never_acknowledged_before_its_end():
    """A DDL or TRUNCATE inside a transaction committed in parts goes out with its part;
    like the part's events it is not acknowledged (nor counted as consistent) before the
    transaction's end."""
    import dataclasses

    from tidemark.kernel.table_ops import TableOp

    b = Batcher(max_events=3, max_latency_ms=1000, max_events_cap=3, part_events=3, clock=Clock())
    op = TableOp("s.public.a", "truncate", p(3), "t1", 0, {})
    first = dataclasses.replace(
        chunk(*tx("t1", 1, 2, 4, 5), markers=[Marker("BEGIN", "t1")]), ops=[op]
    )
    b.add(first, source="s")
    part = b.poll()
    assert part is not None and ids(part) == [1, 2] and [o.kind for o in part.ops] == ["truncate"]
    assert part.split == {"s": "t1"} and not part.consistent and part.positions == {}
    b.add(chunk(*tx("t1", 6), markers=[Marker("END", "t1")]), source="s")
    last = b.poll()
    assert last is not None and ids(last) == [4, 5, 6] and last.consistent
    assert last.positions == {"s": p(6)}


def test_the_runner_splits_only_a_transaction_that_cannot_fit_what_it_may_hold():
    """A transaction bigger than a batch but within `max_pending_events` goes whole however
    the engine's polls cut it (it split at half of that when a poll came while it was open:
    test_runner's 20-event transaction with max_events 7, under load); one that cannot fit
    goes in parts."""
    from tests.pipeline.recording_lake import RecordingLake
    from tidemark.stream_processors.embedded.runner import EmbeddedRunner, RunnerSettings

    runner = EmbeddedRunner(
        [], RecordingLake(), settings=RunnerSettings(max_events=7, max_latency_ms=60_000)
    )
    assert runner.max_pending == 28
    fits, too_big = runner._new_batcher(), runner._new_batcher()
    for b, size, name in [(fits, 27, "t1"), (too_big, 40, "t2")]:
        batches = []
        for start in range(1, size + 1, 5):  # engine chunks of 5, each polled while open
            events = range(start, min(start + 5, size + 1))
            begin = [Marker("BEGIN", name)] * (start == 1)
            b.add(chunk(*tx(name, *events), markers=begin), source="s")
            while b.due() and (batch := b.poll()) is not None:
                batches.append(batch)
        b.add(chunk(markers=[Marker("END", name)], last=p(size + 1)), source="s")
        while b.due() and (batch := b.poll()) is not None:
            batches.append(batch)
        assert sum(len(ids(x)) for x in batches) == size
        if b is fits:
            assert [ids(x) for x in batches] == [list(range(1, size + 1))]
            assert batches[0].split == {} and batches[0].consistent
        else:
            assert len(batches) > 1 and all(x.split == {"s": name} for x in batches)
            assert [x.consistent for x in batches][-1] and not batches[0].consistent

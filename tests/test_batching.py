"""The batcher with a fake clock and hand-built decoded chunks (the decoder's shape)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.batching_support import Clock, Marker, chunk, ids, p, tx
from tidemark.stream_processors.batching import Batcher


def test_closes_on_size_at_a_transaction_boundary():
    clock = Clock()
    b = Batcher(max_events=4, max_latency_ms=1000, clock=clock)
    b.add(
        chunk(*tx("t1", 1, 2, 3), markers=[Marker("BEGIN", "t1"), Marker("END", "t1")]), source="s"
    )
    assert b.poll() is None  # 3 < 4 and no time passed
    b.add(chunk(*tx("t2", 4, 5), markers=[Marker("BEGIN", "t2"), Marker("END", "t2")]), source="s")
    batch = b.poll()
    # 5 events held; the largest whole-transaction prefix that fits 4 is t1 alone.
    assert batch is not None and batch.closed_by == "size"
    assert ids(batch) == [1, 2, 3]
    assert (batch.batch_id, batch.event_count, batch.tx_count) == (1, 3, 1)
    assert batch.positions == {"s": p(3)}
    assert b.pending_events == 2
    clock.now += 1.0
    batch = b.poll()
    assert batch.closed_by == "latency" and ids(batch) == [4, 5] and batch.batch_id == 2
    assert batch.positions == {"s": p(5)}


def test_in_a_backlog_only_size_closes_a_batch():
    clock = Clock()
    b = Batcher(max_events=4, max_latency_ms=1000, clock=clock)
    b.add(chunk(*tx("t1", 1, 2), markers=[Marker("BEGIN", "t1"), Marker("END", "t1")]), source="s")
    clock.now += 5.0
    assert b.poll(latency=False) is None  # late, but the source holds more: keep taking
    b.add(chunk(*tx("t2", 3, 4), markers=[Marker("BEGIN", "t2"), Marker("END", "t2")]), source="s")
    batch = b.poll(latency=False)
    assert batch is not None and batch.closed_by == "size" and ids(batch) == [1, 2, 3, 4]
    b.add(chunk(*tx("t3", 5), markers=[Marker("BEGIN", "t3"), Marker("END", "t3")]), source="s")
    clock.now += 5.0
    assert b.poll(latency=False) is None
    batch = b.poll()  # caught up: latency closes it
    assert batch.closed_by == "latency" and ids(batch) == [5]


def test_never_splits_a_transaction_whose_end_has_not_arrived():
    clock = Clock()
    b = Batcher(max_events=2, max_latency_ms=500, clock=clock)
    b.add(chunk(*tx("t1", 1, 2, 3), markers=[Marker("BEGIN", "t1")]), source="s")
    clock.now += 10
    assert b.poll() is None  # over size and over latency, but t1 is still open
    assert b.poll(force=True) is None  # even forced: an open transaction never goes out
    b.add(chunk(*tx("t1", 4), markers=[Marker("END", "t1")]), source="s")
    batch = b.poll()
    assert ids(batch) == [1, 2, 3, 4]  # bigger than max_events: whole, in a batch of its own
    assert batch.tx_count == 1


def test_open_transaction_is_held_back_while_earlier_ones_go():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    b.add(
        chunk(
            *tx("t1", 1, 2), *tx("t2", 3, 4), markers=[Marker("END", "t1"), Marker("BEGIN", "t2")]
        ),
        source="s",
    )
    clock.now += 1
    batch = b.poll()
    assert ids(batch) == [1, 2] and batch.positions == {"s": p(2)}
    b.add(chunk(markers=[Marker("END", "t2")], last=p(9)), source="s")
    batch = b.poll()
    assert ids(batch) == [3, 4]
    assert batch.positions == {"s": p(9)}  # nothing held back: the END marker's position counts


def test_without_markers_a_transaction_is_complete_when_another_starts():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    b.add(chunk(*tx("a", 1, 2), *tx("b", 3)), source="s")
    clock.now += 1
    assert ids(b.poll()) == [1, 2]
    assert b.poll() is None  # "b" may still go on
    b.add(chunk(*tx("b", 4), *tx("c", 5)), source="s")
    assert ids(b.poll()) == [3, 4]


def test_events_without_tx_id_are_each_complete():
    clock = Clock()
    b = Batcher(max_events=2, max_latency_ms=500, clock=clock)
    b.add(
        chunk(("s.public.a", 1, None), ("s.public.a", 2, None), ("s.public.a", 3, None)), source="s"
    )
    assert ids(b.poll()) == [1, 2]  # snapshot rows split anywhere


def test_merges_tables_and_chunks_in_position_order():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    b.add(
        chunk(*tx("t1", 1), *tx("t1", 2, table="s.public.b"), markers=[Marker("END", "t1")]),
        source="s",
    )
    b.add(
        chunk(*tx("t2", 3), *tx("t2", 4, table="s.public.b"), markers=[Marker("END", "t2")]),
        source="s",
    )
    clock.now += 1
    batch = b.poll()
    assert ids(batch) == [1, 3] and ids(batch, "s.public.b") == [2, 4]
    assert (batch.event_count, batch.tx_count) == (4, 2)
    assert batch.changes["s.public.b"].key_columns == ("id",)


def test_tracks_positions_per_source():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    b.add(chunk(*tx("x", 7, table="one.public.a"), markers=[Marker("END", "x")]), source="one")
    b.add(chunk(*tx("y", 3, table="two.public.a"), markers=[Marker("END", "y")]), source="two")
    clock.now += 1
    batch = b.poll()
    assert batch.positions == {"one": p(7), "two": p(3)}
    assert set(batch.changes) == {"one.public.a", "two.public.a"}


def test_latency_counts_from_the_oldest_event():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    b.add(chunk(*tx("t1", 1), markers=[Marker("END", "t1")]), source="s")
    clock.now += 0.3
    b.add(chunk(*tx("t2", 2), markers=[Marker("END", "t2")]), source="s")
    assert b.poll() is None
    clock.now += 0.2
    batch = b.poll()
    assert batch.closed_by == "latency" and ids(batch) == [1, 2]
    assert b.poll() is None and b.pending_events == 0


def test_dead_letters_ride_with_the_next_batch():
    clock = Clock()
    b = Batcher(max_events=1, max_latency_ms=500, clock=clock)
    b.add(chunk(letters=["bad record"]), source="s")
    b.add(chunk(*tx("t1", 1), markers=[Marker("END", "t1")]), source="s")
    assert b.poll().dead_letters == ("bad record",)


def test_grows_under_backlog_and_shrinks_when_idle():
    clock = Clock()
    b = Batcher(max_events=2, max_latency_ms=500, max_events_cap=8, clock=clock)
    position = 0
    sizes = []
    for _ in range(6):  # a backlog: far more than max_events waiting each time
        for _ in range(10):
            position += 1
            b.add(
                chunk(*tx(f"t{position}", position), markers=[Marker("END", f"t{position}")]),
                source="s",
            )
        batch = b.poll()
        sizes.append(batch.event_count)
    assert sizes[0] == 2 and max(sizes) == 8  # grew, and stopped at the cap
    assert b.effective_max == 8
    while b.poll() is not None:  # drain the backlog
        pass
    for _ in range(3):  # then it is quiet: batches close on latency and the size shrinks back
        position += 1
        b.add(
            chunk(*tx(f"t{position}", position), markers=[Marker("END", f"t{position}")]),
            source="s",
        )
        clock.now += 1
        assert b.poll().closed_by == "latency"
    assert b.effective_max == 2


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError, match="max_events"):
        Batcher(max_events=0, max_latency_ms=10)


def test_position_does_not_run_ahead_into_an_open_transaction():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    b.add(
        chunk(*tx("t1", 1), markers=[Marker("END", "t1"), Marker("BEGIN", "t2")], last=p(5)),
        source="s",
    )
    clock.now += 1
    assert b.poll().positions == {"s": p(1)}  # t2 began at 5 but has no events yet


def test_plan_cut_falls_on_transaction_boundaries():
    from tidemark.stream_processors.transactions import plan_cut

    position = pa.array([p(i) for i in range(1, 8)])
    tx = pa.array(["a", "a", "b", "b", "b", None, "c"])
    cut = plan_cut(position, tx, marker_mode=True, ended={"a", "b"}, limit=4)
    assert (cut.count, cut.position, cut.ready) == (2, p(3), 6)  # "c" has no END yet
    cut = plan_cut(position, tx, marker_mode=True, ended={"a", "b"}, limit=1)
    assert cut.count == 2  # "a" is bigger than the limit: whole, alone
    cut = plan_cut(position, tx, marker_mode=False, ended=set(), limit=None)
    assert (cut.count, cut.position) == (6, p(7))  # "c" is the newest: it may go on
    cut = plan_cut(position, tx, marker_mode=True, ended={"a", "b", "c"}, limit=None)
    assert (cut.count, cut.position) == (7, None)


def test_quiet_position_lets_heartbeats_advance_an_idle_source():
    clock = Clock()
    b = Batcher(max_events=100, max_latency_ms=500, clock=clock)
    assert b.quiet_position("s") is None
    b.add(chunk(last=p(3)), source="s")  # a heartbeat: no events, no markers
    assert b.quiet_position("s") == p(3)
    b.add(chunk(*tx("t1", 4), markers=[Marker("BEGIN", "t1")]), source="s")
    assert b.quiet_position("s") is None  # events held, transaction open
    b.add(chunk(markers=[Marker("END", "t1")], last=p(5)), source="s")
    assert b.poll(force=True).positions == {"s": p(5)}
    assert b.quiet_position("s") == p(5)

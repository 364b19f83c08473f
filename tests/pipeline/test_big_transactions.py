"""Transactions of any size through the runner, with the real Debezium engine (issue 13, 6).

A transaction bigger than the events the runner may hold (`max_pending_events`) hung the
loop: backpressure stopped polling while the transaction could only complete by polling
more. Now it goes out in parts, held memory stays bounded, nothing of it is acknowledged
before its last part, and a crash between parts replays it exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.pipeline.recording_lake import Crash, RecordingLake
from tests.pipeline.test_runner import TABLE, _run_until, _runner, _setup

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / f"s{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


BIG = 1000  # rows inserted by the big transaction; max_events=50 lets the runner hold 200


EVENTS = 1 + BIG + 3 + 1 + 1 + 1  # what `_write` makes


def _write(url: str) -> None:
    """A small transaction, a big one (inserts, updates and a delete of older rows), another
    small one (`EVENTS` events)."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO public.items VALUES (50, 1, 'before')")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO public.items SELECT g, 1, 'big' FROM generate_series(1000, %s) g",
            (999 + BIG,),
        )
        cur.execute("UPDATE public.items SET qty = qty + 10 WHERE id <= 3")
        cur.execute(
            "UPDATE public.items SET note = 'changed in the same transaction' WHERE id = 1000"
        )
        cur.execute("DELETE FROM public.items WHERE id = 4")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE public.items SET qty = 99 WHERE id = 50")


def _source_rows(url: str) -> dict[int, tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, qty, note FROM public.items")
        return {r[0]: r for r in cur.fetchall()}


def _lake_rows(lake: RecordingLake) -> dict[int, tuple]:
    rows = lake._open.get(TABLE, {})
    return {key[0]: (row["id"], row["qty"], row["note"]) for key, row in rows.items()}


class _Sampled(RecordingLake):
    """Records the most events the runner held whenever it commits."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = None
        self.peak = 0

    def commit_batch(self, batch_id, tables, **kwargs):
        self.peak = max(self.peak, self.runner.pending_events)
        return super().commit_batch(batch_id, tables, **kwargs)


def test_a_transaction_bigger_than_the_runner_may_hold_goes_through_in_parts(
    fresh_database, state
) -> None:
    url = fresh_database()
    _setup(url)
    lake = _Sampled()
    runner = _runner(url, state, lake, max_events=50, max_latency_ms=100)
    lake.runner = runner
    expected = 5 + EVENTS
    peak = [0]
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.is_set():
            peak[0] = max(peak[0], runner.pending_events)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcome = _run_until(
        runner,
        lambda: len(lake.changelog(TABLE)) >= expected,
        timeout=120,
        then=lambda: _write(url),
    )
    stop_sampling.set()
    sampler.join()
    assert "error" not in outcome, outcome

    positions = [e["_tm_position"] for e in lake.changelog(TABLE)]
    assert len(positions) == len(set(positions)) == expected
    assert _lake_rows(lake) == _source_rows(url)
    # Memory: never more than max_pending (4 x 50) plus one engine chunk (64 records).
    assert max(peak[0], lake.peak) <= 200 + 64, (peak[0], lake.peak)

    big_tx = {
        e["_tm_tx_id"] for e in lake.changelog(TABLE) if e["note"] == "big" and e["_tm_tx_id"]
    }
    assert len(big_tx) == 1
    (tx_id,) = big_tx
    parts = [b for b in lake.batches if b.split]
    assert len(parts) >= BIG // 100, [b.batch_id for b in parts]
    assert [b.batch_id for b in parts] == list(range(parts[0].batch_id, parts[-1].batch_id + 1))
    assert all(b.split == {"shop": tx_id} for b in parts)
    assert [b.consistent for b in parts] == [False] * (len(parts) - 1) + [True]
    # Nothing of the open transaction is acknowledged: the parts carry no position to
    # acknowledge; the last one covers the transaction whole.
    assert all("shop" not in b.positions for b in parts[:-1])
    big_positions = [e["_tm_position"] for e in lake.changelog(TABLE) if e["_tm_tx_id"] == tx_id]
    assert parts[-1].positions["shop"] >= max(big_positions)
    others = [b for b in lake.batches if not b.split]
    assert all(b.consistent is not False for b in others)


class _CrashInPart(RecordingLake):
    """Dies while committing the n-th part of a split transaction."""

    def __init__(self, part: int) -> None:
        super().__init__()
        self.part = part
        self.parts = 0

    def commit_batch(self, batch_id, tables, **kwargs):
        if kwargs.get("split"):
            self.parts += 1
            if self.parts == self.part:
                raise Crash(f"crash in part {self.parts} (batch {batch_id})")
        return super().commit_batch(batch_id, tables, **kwargs)


def test_a_crash_between_parts_replays_the_transaction_exactly_once(fresh_database, state) -> None:
    url = fresh_database()
    _setup(url)
    lake = _CrashInPart(part=4)
    expected = 5 + EVENTS
    first = _run_until(
        _runner(url, state, lake, max_events=50, max_latency_ms=100),
        lambda: False,
        timeout=90,
        then=lambda: _write(url),
    )
    assert isinstance(first.get("error"), Crash), first
    committed = [e for e in lake.changelog(TABLE) if e["note"] == "big"]
    assert len(committed) >= 150  # three parts (of 50 to 100 events) made it before the crash
    assert lake.batches[-1].consistent is False

    lake.part = 0  # no more crashes
    second = _run_until(
        _runner(url, state, lake, max_events=50, max_latency_ms=100),
        lambda: len(lake.changelog(TABLE)) >= expected,
        timeout=120,
    )
    assert "error" not in second, second
    positions = [e["_tm_position"] for e in lake.changelog(TABLE)]
    assert len(positions) == len(set(positions)) == expected
    assert _lake_rows(lake) == _source_rows(url)
    assert lake.batches[-1].consistent is True

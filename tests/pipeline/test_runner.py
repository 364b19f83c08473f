"""The embedded runner with the real Debezium engine and decoder, into a recording lake.

What the runner owns is tested here: whole transactions per batch, acknowledgement only
after the commit (a crash replays, nothing is lost), retries of transient errors, and a
graceful stop that commits what it holds.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.pipeline.recording_lake import Crash, RecordingLake
from tidemark.connectors.decode import TYPE_SETTINGS, Decoder
from tidemark.connectors.postgres.capture import open_postgres_engine
from tidemark.pipeline import run_until
from tidemark.stream_processors.embedded.runner import EmbeddedRunner, RunnerSettings, SourceSpec

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

TABLE = "shop.public.items"


def _setup(url: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE public.items (id int PRIMARY KEY, qty int, note text)")
        cur.execute("INSERT INTO public.items SELECT g, 0, 'seed' FROM generate_series(1, 5) g")


def _transactions(url: str, sizes: list[int], start: int = 100) -> int:
    """Commit one transaction per size (inserts plus an update); returns the events made."""
    conn = psycopg2.connect(url)
    events, key = 0, start
    with conn.cursor() as cur:
        for size in sizes:
            for _ in range(size):
                cur.execute("INSERT INTO public.items VALUES (%s, 1, 'x')", (key,))
                key += 1
            cur.execute("UPDATE public.items SET qty = qty + 1 WHERE id = 1")
            conn.commit()
            events += size + 1
    conn.close()
    return events


def _runner(url: str, state: Path, lake: RecordingLake, **settings) -> EmbeddedRunner:
    pipeline = "r" + state.name.replace("-", "")[:12]

    def open_engine():
        return open_postgres_engine(
            pipeline=pipeline,
            source="shop",
            dsn=url,
            tables=["public.items"],
            state=state,
            heartbeat_ms=500,
            extra=TYPE_SETTINGS,
            max_batch=64,
        )

    spec = SourceSpec("shop", open_engine, Decoder("postgres"))
    return EmbeddedRunner([spec], lake, settings=RunnerSettings(**settings))


def _run_until(runner: EmbeddedRunner, done, timeout: float = 90.0, then=None):
    """Run in a thread; once it streams call `then()`; stop when `done()` holds."""
    stop = threading.Event()
    outcome: dict = {}

    def body():
        try:
            outcome["stats"] = run_until(runner, stop)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    if then is not None:
        while not runner.heartbeats and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.1)
        then()
    while not done() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    stop.set()
    thread.join(60)
    return outcome


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / f"s{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def test_batches_hold_whole_transactions_and_every_event_once(fresh_database, state) -> None:
    url = fresh_database()
    _setup(url)
    lake = RecordingLake()
    runner = _runner(url, state, lake, max_events=7, max_latency_ms=200)
    sizes = [1, 3, 12, 2, 9, 1, 1, 20, 4]
    expected = 5 + sum(sizes) + len(sizes)
    outcome = _run_until(
        runner,
        lambda: len(lake.changelog(TABLE)) >= expected,
        then=lambda: _transactions(url, sizes),
    )
    assert "error" not in outcome, outcome
    events = lake.changelog(TABLE)
    positions = [e["_tm_position"] for e in events]
    assert len(positions) == len(set(positions)) == expected
    batch_of_tx: dict[str, set[int]] = {}
    for batch in lake.batches:
        for row in batch.tables[TABLE].changelog.to_pylist():
            if row["_tm_tx_id"] is not None:
                batch_of_tx.setdefault(row["_tm_tx_id"], set()).add(batch.batch_id)
    assert len(batch_of_tx) == len(sizes)
    assert all(len(b) == 1 for b in batch_of_tx.values()), batch_of_tx
    assert max(b.batch_id for b in lake.batches) >= 3  # max_events forced several batches
    big = [b for b in lake.batches if b.tables[TABLE].changelog.num_rows > 7]
    assert big, "the 20-row transaction must go out whole in a batch of its own"


def test_offsets_advance_only_after_the_commit(fresh_database, state) -> None:
    """A crash inside commit_batch: nothing of that batch was acknowledged, so a new runner
    receives it again, and every event ends up committed exactly once.

    The crash hits batch 3, the first streamed one (batches 1 and 2 are the five seed rows of
    the snapshot). A crash inside the snapshot makes Debezium redo it, which folds the
    streamed changes into snapshot rows: tests/pipeline/test_redelivery.py covers that."""
    url = fresh_database()
    _setup(url)
    lake = RecordingLake(crash_at_batch=3)
    expected = 5 + 4 * 4
    first = _run_until(
        _runner(url, state, lake, max_events=4, max_latency_ms=100),
        lambda: False,
        timeout=60,
        then=lambda: _transactions(url, [3, 3, 3, 3]),
    )
    assert isinstance(first.get("error"), Crash)
    assert [b.batch_id for b in lake.batches] == [1, 2]
    lake.crash_at_batch = None
    outcome = _run_until(
        _runner(url, state, lake, max_events=4, max_latency_ms=100),
        lambda: len(lake.changelog(TABLE)) >= expected,
    )
    assert "error" not in outcome, outcome
    positions = [e["_tm_position"] for e in lake.changelog(TABLE)]
    assert len(positions) == len(set(positions)) == expected


def test_transient_errors_are_retried(fresh_database, state) -> None:
    url = fresh_database()
    _setup(url)
    lake = RecordingLake(transient_failures=2)
    runner = _runner(url, state, lake, max_events=1000, max_latency_ms=100, backoff_initial_s=0.05)
    outcome = _run_until(runner, lambda: len(lake.changelog(TABLE)) >= 5)
    assert "error" not in outcome, outcome
    assert outcome["stats"].retries == 2
    assert len(lake.changelog(TABLE)) == 5


def test_stop_commits_what_is_held(fresh_database, state) -> None:
    """With batches that would not close for a minute, a stop still commits the held ones."""
    url = fresh_database()
    _setup(url)
    lake = RecordingLake()
    runner = _runner(url, state, lake, max_events=100_000, max_latency_ms=60_000)
    outcome = _run_until(runner, lambda: runner.pending_events >= 5)
    assert "error" not in outcome, outcome
    assert len(lake.changelog(TABLE)) == 5
    assert lake.batches[-1].batch_id == 1


class _SlowFirstCommit(RecordingLake):
    """Batch 1's commit (the 5 seed rows) lets the test make more changes, then waits until
    the runner has decoded them: a loop that only polls between commits never gets there."""

    def __init__(self) -> None:
        super().__init__()
        self.runner: EmbeddedRunner | None = None
        self.committing = threading.Event()
        self.decoded_meanwhile = 0

    def commit_batch(self, batch_id, tables, **kwargs):
        if batch_id == 1:
            assert self.runner is not None
            self.committing.set()
            deadline = time.monotonic() + 30
            while self.runner.pending_events < 5 + 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.decoded_meanwhile = self.runner.pending_events
        return super().commit_batch(batch_id, tables, **kwargs)


def test_the_next_batch_is_captured_while_a_commit_runs(fresh_database, state) -> None:
    url = fresh_database()
    _setup(url)
    lake = _SlowFirstCommit()
    runner = _runner(url, state, lake, max_events=1000, max_latency_ms=100)
    lake.runner = runner

    def more_changes_during_the_first_commit() -> None:
        lake.committing.wait(60)
        _transactions(url, [2, 2, 1])

    changes = threading.Thread(target=more_changes_during_the_first_commit, daemon=True)
    changes.start()
    outcome = _run_until(runner, lambda: len(lake.changelog(TABLE)) >= 5 + 8)
    changes.join(10)
    assert "error" not in outcome, outcome
    assert lake.decoded_meanwhile >= 5 + 6  # batch 1's five rows, and what came after
    assert [b.batch_id for b in lake.batches][:1] == [1]
    positions = [e["_tm_position"] for e in lake.changelog(TABLE)]
    assert len(positions) == len(set(positions)) == 5 + 8


def test_redelivered_events_in_one_batch_are_dropped() -> None:
    """Debezium re-delivers after reconnecting by itself: one event per position survives
    (the replay guard, as the core applies it before milestoning)."""
    import pyarrow as pa

    from tidemark.stream_processors.milestoning.guard import admit

    events = pa.table({"id": [1, 1, 2, 2], "_tm_position": ["a", "a", "b", "c"]})
    kept, _ = admit(events, None, table="s.p.t")
    assert kept.to_pylist() == [
        {"id": 1, "_tm_position": "a"},
        {"id": 2, "_tm_position": "b"},
        {"id": 2, "_tm_position": "c"},
    ]

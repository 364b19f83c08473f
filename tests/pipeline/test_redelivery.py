"""Redelivery and a redone snapshot against the real engine, runner and Delta lake: the
replay guard (docs/pipeline.md) keeps every change exactly once.

Debezium delivers at least once: after it reconnects by itself it re-delivers from its last
flushed offset, and a snapshot interrupted by a crash is taken again (its rows numbered
anew). Here the real engine is wrapped so that windows of records it delivered, committed
and acknowledged are delivered once more (copies, as Debezium sends them), with deletes
inside the window; and a process dies in the middle of the initial snapshot, so Debezium
redoes it. Each story ends with `verify` clean and the versions and changelog events per
key counted against the ledger of changes made to the source.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg2
import pytest
from deltalake import DeltaTable

from tidemark.config import PipelineConfig, parse_config
from tidemark.connectors.decode import TYPE_SETTINGS, Decoder
from tidemark.connectors.postgres.capture import open_postgres_engine
from tidemark.kernel.records import RawRecord
from tidemark.pipeline import lake_source_position, open_lake, run_until
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.embedded.runner import (
    EmbeddedRunner,
    Engine,
    RunnerSettings,
    SourceSpec,
)
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

TABLE = "shop.public.items"
SEEDS = 200


@dataclass
class Ledger:
    """Every change made to the source, in commit order: (op, id, row after or None)."""

    changes: list[tuple[str, int, tuple | None]] = field(default_factory=list)

    def versions(self, snapshot: dict[int, tuple]) -> Counter[int]:
        """Forensic versions per key: the snapshot rows, then each change that changes the
        key's row (a delete only closes a version)."""
        state = dict(snapshot)
        count = Counter(snapshot.keys())
        for op, key, row in self.changes:
            if op == "d":
                state.pop(key, None)
            elif state.get(key) != row:
                state[key] = row
                count[key] += 1
        return count

    def events(self, snapshot: dict[int, tuple]) -> Counter[int]:
        """Changelog events per key: one snapshot row each, then every change."""
        count = Counter(snapshot.keys())
        count.update(key for _, key, _ in self.changes)
        return count


def _setup(url: str) -> dict[int, tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE public.items (id int PRIMARY KEY, qty int, note text)")
        cur.execute(
            "INSERT INTO public.items SELECT g, g % 7, 'seed ' || g "
            f"FROM generate_series(1, {SEEDS}) g"
        )
    return {i: (i % 7, f"seed {i}") for i in range(1, SEEDS + 1)}


def _churn(url: str, ledger: Ledger, *, first_new: int) -> None:
    """Inserts, updates (some changing nothing), deletes and a re-insert, one transaction
    each few changes: what a window must hold to catch a guard that forgets deleted keys."""
    conn = psycopg2.connect(url)
    cur = conn.cursor()

    def run(sql: str, args: tuple, op: str, key: int, row: tuple | None) -> None:
        cur.execute(sql, args)
        ledger.changes.append((op, key, row))

    new = list(range(first_new, first_new + 20))
    for key in new:
        run("INSERT INTO public.items VALUES (%s, 1, 'new')", (key,), "c", key, (1, "new"))
    conn.commit()
    for key in new[:10]:
        run("UPDATE public.items SET qty = 2 WHERE id = %s", (key,), "u", key, (2, "new"))
    for key in (3, 4):  # a seed updated to the value it has: a change that changes nothing
        row = (key % 7, f"seed {key}")
        run("UPDATE public.items SET qty = qty WHERE id = %s", (key,), "u", key, row)
    conn.commit()
    for key in [*new[:5], 10, 11, 12]:  # deleted inside the window: no open version left
        run("DELETE FROM public.items WHERE id = %s", (key,), "d", key, None)
    conn.commit()
    run("INSERT INTO public.items VALUES (%s, 9, 'back')", (new[0],), "c", new[0], (9, "back"))
    run("UPDATE public.items SET note = 'b2' WHERE id = %s", (new[0],), "u", new[0], (9, "b2"))
    run("UPDATE public.items SET qty = 5 WHERE id = 20", (), "u", 20, (5, "seed 20"))
    conn.commit()
    cur.close()
    conn.close()


class Redelivering:
    """The real engine, delivering windows of its own records a second time.

    After each acknowledgement `plan(delivered, acknowledged)` may return a window (indices
    into what was delivered); the next `poll` returns copies of those records, exactly as
    Debezium re-delivers them (same content; snapshot rows get numbered again by the
    decoder). Acknowledging a copy does nothing: its original was acknowledged already.
    """

    def __init__(
        self, engine: Engine, plan: Callable[[list[RawRecord], int], range | None]
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.delivered: list[RawRecord] = []
        self.index: dict[int, int] = {}
        self.acknowledged = 0
        self.copies: list[RawRecord] = []
        self.redelivered = 0

    def poll(self, timeout: float = 1.0) -> list[RawRecord]:
        if self.copies:
            copies, self.copies = self.copies, []
            return copies
        records = self.engine.poll(timeout)
        for record in records:
            self.index[id(record)] = len(self.delivered)
            self.delivered.append(record)
        return records

    def acknowledge(self, upto: RawRecord) -> int:
        if upto.origin.startswith("again:"):
            return 0
        done = self.engine.acknowledge(upto)
        self.acknowledged = max(self.acknowledged, self.index[id(upto)] + 1)
        window = self.plan(self.delivered, self.acknowledged)
        if window is not None:
            self.copies = [
                replace(r, origin=f"again:{r.origin}")
                for r in self.delivered[window.start : window.stop]
            ]
            self.redelivered += len(self.copies)
        return done

    @property
    def backlogged(self) -> bool:
        return self.engine.backlogged

    def close(self) -> None:
        self.engine.close()


def _config(url: str, tmp_path: Path) -> PipelineConfig:
    return parse_config(
        {
            "pipeline": "g" + uuid.uuid4().hex[:10],
            "lake": str(tmp_path / "lake"),
            "sources": [
                {"name": "shop", "kind": "postgres", "dsn": url, "tables": ["public.items"]}
            ],
        }
    )


def _runner(
    config: PipelineConfig,
    state: Path,
    lake: Lake,
    *,
    wrap: Callable[[Engine], Engine] = lambda e: e,
    max_events: int = 20,
) -> EmbeddedRunner:
    def open_engine() -> Engine:
        engine = open_postgres_engine(
            pipeline=config.pipeline,
            source="shop",
            dsn=config.sources[0].dsn,
            tables=["public.items"],
            state=state,
            heartbeat_ms=500,
            extra=TYPE_SETTINGS,
            max_batch=16,
        )
        return wrap(engine)

    spec = SourceSpec(
        "shop",
        open_engine,
        Decoder("postgres"),
        resume_position=lambda: lake_source_position(lake, "shop"),
    )
    return EmbeddedRunner(
        [spec], lake, settings=RunnerSettings(max_events=max_events, max_latency_ms=100)
    )


def _run(runner: EmbeddedRunner, done: Callable[[], bool], timeout: float = 120.0) -> dict:
    stop = threading.Event()
    outcome: dict = {}

    def body() -> None:
        try:
            outcome["stats"] = run_until(runner, stop)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.1)
    stop.set()
    thread.join(60)
    return outcome


def _per_key(lake_root: Path, layer: str) -> Counter[int]:
    table = DeltaTable(str(lake_root / layer / TABLE)).to_pyarrow_table()
    return Counter(table.column("id").to_pylist())


def _changes(records: Sequence[RawRecord]) -> list[int]:
    """Indices of data change records (not heartbeats or transaction markers)."""
    return [i for i, r in enumerate(records) if r.destination == TABLE and r.value is not None]


def _check(config: PipelineConfig, ledger: Ledger, snapshot: dict[int, tuple]) -> None:
    root = Path(config.lake)
    assert _per_key(root, "forensic") == ledger.versions(snapshot)
    assert _per_key(root, "changelog") == ledger.events(snapshot)
    report = verify_source(config, config.sources[0], timeout=10)
    assert report.ok, report


def test_windows_delivered_twice_land_once(fresh_database, tmp_path) -> None:
    """A window of snapshot rows, delivered again while the snapshot runs, and a window of
    streamed changes with deletes inside, delivered again after it was committed."""
    url = fresh_database()
    snapshot = _setup(url)
    config = _config(url, tmp_path)
    lake = open_lake(config)
    ledger = Ledger()
    churned = threading.Event()
    windows: list[range] = []

    def plan(delivered: list[RawRecord], acknowledged: int) -> range | None:
        changes = _changes(delivered[:acknowledged])
        if not windows and len(changes) >= 60:  # 60 snapshot rows are in: again
            windows.append(range(changes[0], acknowledged))
            return windows[-1]
        expected = SEEDS + len(ledger.changes)
        if len(windows) == 1 and churned.is_set() and len(changes) >= expected:
            after_snapshot = _changes(delivered)[SEEDS - 1] + 1
            windows.append(range(after_snapshot, acknowledged))  # every streamed record

            return windows[-1]
        return None

    wrapped: list[Redelivering] = []

    def wrap(engine: Engine) -> Engine:
        wrapped.append(Redelivering(engine, plan))
        return wrapped[-1]

    runner = _runner(config, tmp_path / "state", lake, wrap=wrap)

    def streaming_then_churn() -> None:
        deadline = time.monotonic() + 90
        while not runner.heartbeats and time.monotonic() < deadline:
            time.sleep(0.1)
        _churn(url, ledger, first_new=1000)
        churned.set()

    writer = threading.Thread(target=streaming_then_churn, daemon=True)
    writer.start()

    def everything_twice_and_committed() -> bool:
        if len(windows) < 2 or not wrapped:
            return False
        delivered = len(_changes(wrapped[-1].delivered)) + sum(
            len(_changes(wrapped[-1].delivered[w.start : w.stop])) for w in windows
        )
        return runner.stats.events >= delivered and runner.pending_events == 0

    outcome = _run(runner, everything_twice_and_committed)
    writer.join(10)
    assert "error" not in outcome, outcome
    assert len(windows) == 2, "both windows were delivered again"
    assert any(r.destination == TABLE for r in wrapped[-1].delivered[windows[1].start :])
    _check(config, ledger, snapshot)
    lake.close()


class _DiesInBatch(Lake):
    """A lake whose process dies inside one batch's commit (before anything is written)."""

    dies_at: int | None = None

    def commit_batch(self, batch_id, tables, **kwargs):  # type: ignore[no-untyped-def]
        if batch_id == self.dies_at:
            raise _Died(f"killed inside batch {batch_id}")
        return super().commit_batch(batch_id, tables, **kwargs)


class _Died(Exception):
    pass


def test_a_snapshot_redone_after_a_crash_adds_only_what_changed(fresh_database, tmp_path) -> None:
    """The process dies in the middle of the initial snapshot: Debezium stores no offset
    inside a snapshot, so the next start takes it again, under new row numbers. Rows that
    did not change since add nothing (no second changelog event, no version); a row that
    changed gets one new version; streamed changes with deletes follow."""
    url = fresh_database()
    snapshot = _setup(url)
    config = _config(url, tmp_path)
    lake = _DiesInBatch(str(tmp_path / "lake"), app_id=config.app_id)
    lake.dies_at = 3
    state = tmp_path / "state"
    first = _run(_runner(config, state, lake), lambda: False, timeout=60)
    assert isinstance(first.get("error"), _Died), first
    landed = _per_key(Path(config.lake), "changelog")
    assert 0 < sum(landed.values()) < SEEDS, "the process died inside the snapshot"
    # while it was down: one seed changed, one row was added
    ledger = Ledger()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE public.items SET note = 'changed' WHERE id = 1")
        cur.execute("INSERT INTO public.items VALUES (500, 0, 'while down')")
    redone = {**snapshot, 1: (1, "changed"), 500: (0, "while down")}
    lake.dies_at = None
    runner = _runner(config, state, lake)
    done = threading.Event()

    def streaming_then_churn() -> None:
        deadline = time.monotonic() + 90
        while not runner.heartbeats and time.monotonic() < deadline:
            time.sleep(0.1)
        _churn(url, ledger, first_new=1000)
        done.set()

    writer = threading.Thread(target=streaming_then_churn, daemon=True)
    writer.start()
    outcome = _run(
        runner,
        lambda: (
            done.is_set()
            and sum(_per_key(Path(config.lake), "changelog").values())
            >= sum(ledger.events(redone).values()) + landed[1]
        ),
    )
    writer.join(10)
    assert "error" not in outcome, outcome
    # Key 1 was read twice with different values: two snapshot rows, two versions. Every
    # other seed's second read repeated the lake's row: nothing.
    versions, events = ledger.versions(redone), ledger.events(redone)
    versions[1] += landed[1]
    events[1] += landed[1]
    root = Path(config.lake)
    assert _per_key(root, "forensic") == versions
    assert _per_key(root, "changelog") == events
    report = verify_source(config, config.sources[0], timeout=10)
    assert report.ok, report
    lake.close()

"""The Faust worker end to end: real Debezium envelopes from the embedded engine on a real
Postgres, published to a real Kafka-protocol broker (Tansu) the way Kafka Connect does,
consumed by `tidemark worker` processes into real Delta tables, checked row by row."""

from __future__ import annotations

import decimal
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pyarrow.compute as pc
import pytest

from tests.distributed.support import (
    publish,
    read_layer,
    start_worker,
    wait_for,
    write_config,
)
from tests.fixtures.kafka import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.debezium]

TABLE = "public.items"


def _setup(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, "
            "qty int, price numeric(12,2), note text)"
        )


def _churn(dsn: str, *, rounds: int, start_id: int = 1, per_round: int = 50) -> int:
    """Inserts, updates and deletes in many transactions; returns the number of changes."""
    changes = 0
    with psycopg2.connect(dsn) as conn:
        conn.autocommit = False
        with conn.cursor() as cur:
            next_id = start_id
            for r in range(rounds):
                ids = list(range(next_id, next_id + per_round))
                next_id += per_round
                cur.executemany(
                    "INSERT INTO items VALUES (%s, %s, %s, %s, %s)",
                    [
                        (i, f"item {i} ✓", i % 7, decimal.Decimal(f"{i}.{i % 100:02d}"), None)
                        for i in ids
                    ],
                )
                changes += len(ids)
                cur.execute(
                    "UPDATE items SET qty = qty + 1, note = %s WHERE id = ANY(%s)",
                    (f"round {r}", ids[::3]),
                )
                changes += cur.rowcount
                cur.execute("DELETE FROM items WHERE id = ANY(%s)", (ids[::10],))
                changes += cur.rowcount
                conn.commit()
    return changes


def _source_rows(dsn: str) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name, qty, price, note FROM items ORDER BY id")
        return cur.fetchall()


def _live_rows(lake) -> list[tuple]:
    live = read_layer(lake.root, "live", lake.table)
    if live is None:
        return []
    live = live.sort_by("id")
    cols = [live.column(c).to_pylist() for c in ("id", "name", "qty", "price", "note")]
    return list(zip(*cols, strict=True))


def _changelog_positions(lake) -> list[str]:
    changelog = read_layer(lake.root, "changelog", lake.table)
    return [] if changelog is None else changelog.column("_tm_position").to_pylist()


def _open_ids(lake) -> list[int]:
    forensic = read_layer(lake.root, "forensic", lake.table)
    if forensic is None:
        return []
    return sorted(
        forensic.filter(pc.is_null(forensic.column("_tm_valid_to"))).column("id").to_pylist()
    )


def _caught_up(lake, dsn: str, total_changes: int) -> bool:
    """Every layer holds the source: forensic is written last, so a worker that died after
    live may leave it behind until the survivor replays that range."""
    rows = _source_rows(dsn)
    return (
        len(_changelog_positions(lake)) >= total_changes
        and _live_rows(lake) == rows
        and _open_ids(lake) == [r[0] for r in rows]
    )


def _check_exact(lake, dsn: str, total_changes: int) -> None:
    positions = _changelog_positions(lake)
    assert len(positions) == total_changes, "changelog must hold every event exactly once"
    assert len(set(positions)) == len(positions), "an event was applied twice"
    assert _live_rows(lake) == _source_rows(dsn)
    forensic = read_layer(lake.root, "forensic", lake.table)
    assert _open_ids(lake) == [r[0] for r in _source_rows(dsn)]
    versions = forensic.select(["id", "_tm_position"]).to_pylist()
    assert len({(v["id"], v["_tm_position"]) for v in versions}) == len(versions)


@dataclass(frozen=True)
class LakeUnderTest:
    root: Path
    table: str


@pytest.fixture
def pipeline(tmp_path, kafka, fresh_database, capture_factory):
    """A source database with churn captured by the embedded engine, ready to publish."""
    dsn = fresh_database()
    _setup(dsn)
    name = f"d{uuid.uuid4().hex[:8]}"
    source = f"s{uuid.uuid4().hex[:8]}"  # topics are unique per test: <source>.public.items
    create_topics(kafka.bootstrap, [f"{source}.{TABLE}"], partitions=4)
    create_topics(kafka.bootstrap, [f"{source}.transaction"], partitions=1)
    config = write_config(
        tmp_path / "pipeline.yaml",
        pipeline=name,
        lake=tmp_path / "lake",
        dsn=dsn,
        tables=[TABLE],
        bootstrap=kafka.bootstrap,
        source=source,
        group=f"g-{name}",
        max_events=300,
    )
    capture = capture_factory(dsn, [TABLE], pipeline=name, source=source)
    # streaming starts after the (empty) snapshot: wait for a heartbeat before writing
    capture.collect(
        lambda recs: any(r.destination.startswith("__debezium-heartbeat") for r in recs),
        timeout=120,
    )
    return dsn, config, capture, LakeUnderTest(tmp_path / "lake", f"{source}.{TABLE}")


def _capture_all(capture, expected: int) -> list:
    from tests.fixtures.debezium import distinct_changes

    return capture.collect(lambda recs: distinct_changes(recs, "items") >= expected, timeout=120)


def test_one_worker_applies_every_event_exactly_once(pipeline, kafka, tmp_path):
    dsn, config, capture, lake = pipeline
    total = _churn(dsn, rounds=20)
    records = _capture_all(capture, total)
    publish(kafka.bootstrap, records)
    worker = start_worker(config, tmp_path / "w", "w1")
    try:
        wait_for(
            lambda: _caught_up(lake, dsn, total),
            timeout=120,
            what="the lake to catch up",
            workers=[worker],
        )
    finally:
        worker.stop()
    _check_exact(lake, dsn, total)


def test_kill_9_mid_stream_then_restart_loses_and_doubles_nothing(pipeline, kafka, tmp_path):
    dsn, config, capture, lake = pipeline
    total = _churn(dsn, rounds=40)
    publish(kafka.bootstrap, _capture_all(capture, total))
    first = start_worker(config, tmp_path / "w", "w1")
    try:
        wait_for(
            lambda: first.read_stats().get("batches", 0) >= 2,
            timeout=90,
            what="the first commits",
            workers=[first],
        )
    finally:
        first.kill()
    done_before = len(_changelog_positions(lake))
    assert done_before < total, "the worker finished before it was killed: not mid-stream"
    second = start_worker(config, tmp_path / "w", "w2")
    try:
        wait_for(
            lambda: _caught_up(lake, dsn, total),
            timeout=120,
            what="the restarted worker to catch up",
            workers=[second],
        )
    finally:
        second.stop()
    _check_exact(lake, dsn, total)


@pytest.mark.slow  # long; the default run stays under 15 min
def test_two_workers_split_partitions_and_one_takes_over_when_the_other_dies(
    pipeline, kafka, tmp_path
):
    dsn, config, capture, lake = pipeline
    w1 = start_worker(config, tmp_path / "w", "w1")
    w2 = start_worker(config, tmp_path / "w", "w2")
    workers = [w1, w2]
    try:
        split = wait_for(
            lambda: (
                len(w1.read_stats().get("assigned", [])) == 2
                and len(w2.read_stats().get("assigned", [])) == 2
                and (w1.read_stats()["assigned"], w2.read_stats()["assigned"])
            ),
            timeout=90,
            what="the two workers to split the 4 partitions",
            workers=workers,
        )
        assert not set(split[0]) & set(split[1]), "a partition was assigned twice"
        total = _churn(dsn, rounds=40)
        publish(kafka.bootstrap, _capture_all(capture, total))
        wait_for(
            lambda: w1.read_stats().get("batches", 0) >= 1,
            timeout=90,
            what="the first worker to commit",
            workers=workers,
        )
        w1.kill()
        wait_for(
            lambda: len(w2.read_stats().get("assigned", [])) == 4,
            timeout=90,
            what="the survivor to take over every partition",
            workers=[w2],
        )
        wait_for(
            lambda: _caught_up(lake, dsn, total),
            timeout=120,
            what="the survivor to catch up",
            workers=[w2],
        )
    finally:
        for w in workers:
            w.stop()
    _check_exact(lake, dsn, total)

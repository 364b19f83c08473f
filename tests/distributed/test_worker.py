"""The Faust worker end to end: real Debezium envelopes from the embedded engine on a real
Postgres, published to a real Kafka-protocol broker (Tansu) the way Kafka Connect does,
consumed by `tidemark worker` processes into real Delta tables, checked row by row."""

from __future__ import annotations

import decimal
import uuid

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
LAKE_TABLE = "src.public.items"
TOPIC = "src.public.items"


def _setup(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, "
                    "qty int, price numeric(12,2), note text)")


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
                    [(i, f"item {i} ✓", i % 7, decimal.Decimal(f"{i}.{i % 100:02d}"), None)
                     for i in ids])
                changes += len(ids)
                cur.execute("UPDATE items SET qty = qty + 1, note = %s WHERE id = ANY(%s)",
                            (f"round {r}", ids[::3]))
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
    live = read_layer(lake, "live", LAKE_TABLE)
    if live is None:
        return []
    live = live.sort_by("id")
    cols = [live.column(c).to_pylist() for c in ("id", "name", "qty", "price", "note")]
    return list(zip(*cols, strict=True))


def _changelog_positions(lake) -> list[str]:
    changelog = read_layer(lake, "changelog", LAKE_TABLE)
    return [] if changelog is None else changelog.column("_tm_position").to_pylist()


def _check_exact(lake, dsn: str, total_changes: int) -> None:
    positions = _changelog_positions(lake)
    assert len(positions) == total_changes, "changelog must hold every event exactly once"
    assert len(set(positions)) == len(positions), "an event was applied twice"
    assert _live_rows(lake) == _source_rows(dsn)
    forensic = read_layer(lake, "forensic", LAKE_TABLE)
    current = forensic.filter(pc.is_null(forensic.column("_tm_valid_to")))
    assert sorted(current.column("id").to_pylist()) == [r[0] for r in _source_rows(dsn)]
    versions = forensic.select(["id", "_tm_position"]).to_pylist()
    assert len({(v["id"], v["_tm_position"]) for v in versions}) == len(versions)


@pytest.fixture
def pipeline(tmp_path, kafka, fresh_database, capture_factory):
    """A source database with churn captured by the embedded engine, ready to publish."""
    dsn = fresh_database()
    _setup(dsn)
    name = f"d{uuid.uuid4().hex[:8]}"
    create_topics(kafka.bootstrap, [TOPIC], partitions=4)
    create_topics(kafka.bootstrap, ["src.transaction"], partitions=1)
    config = write_config(tmp_path / "pipeline.yaml", pipeline=name, lake=tmp_path / "lake",
                          dsn=dsn, tables=[TABLE], bootstrap=kafka.bootstrap,
                          group=f"g-{name}")
    capture = capture_factory(dsn, [TABLE], pipeline=name)
    # streaming starts after the (empty) snapshot: wait for a heartbeat before writing
    capture.collect(lambda recs: any(r.destination.startswith("__debezium-heartbeat")
                                     for r in recs), timeout=120)
    return dsn, config, capture, tmp_path / "lake"


def _capture_all(capture, expected: int) -> list:
    from tests.fixtures.debezium import changes

    return capture.collect(lambda recs: len(changes(recs, "items")) >= expected, timeout=120)


def test_one_worker_applies_every_event_exactly_once(pipeline, kafka, tmp_path):
    dsn, config, capture, lake = pipeline
    total = _churn(dsn, rounds=20)
    records = _capture_all(capture, total)
    publish(kafka.bootstrap, records)
    worker = start_worker(config, tmp_path / "w", "w1")
    try:
        wait_for(lambda: len(_changelog_positions(lake)) >= total and
                 _live_rows(lake) == _source_rows(dsn),
                 timeout=120, what="the lake to catch up", workers=[worker])
    finally:
        worker.stop()
    _check_exact(lake, dsn, total)

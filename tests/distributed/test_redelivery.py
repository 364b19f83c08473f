"""Kafka Connect redelivers: the replay guard keeps every change exactly once in the worker.

A kill -9 of a Connect worker makes it re-send everything since its last offset flush, at
*new* Kafka offsets; a kill during the initial snapshot makes Debezium take the snapshot
again (the worker numbers its rows anew). Real Debezium records (embedded engine, real
Postgres) are published the way Connect does to a real Kafka-protocol broker (Tansu) and
consumed by `tidemark worker` processes into real Delta tables. The story: half the
snapshot, a worker killed, the whole snapshot again with the stream after it, then a range
of the stream (with deletes inside) published once more. The lake is checked against the
source's history key by key, and with `verify`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import psycopg2
import pytest
from deltalake import DeltaTable

from tests.distributed.support import publish, read_layer, start_worker, wait_for, write_config
from tests.fixtures.debezium import changes, distinct_changes, payload
from tests.fixtures.kafka import create_topics
from tidemark.config import load_config
from tidemark.kernel.records import RawRecord
from tidemark.stream_processors.distributed.commits import offset_of
from tidemark.verify import verify_source

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.debezium]

SEEDS = 300
PARTITIONS = 4


def _setup(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, qty int, note text)")
        cur.execute(
            f"INSERT INTO items SELECT g, g % 7, 'seed ' || g FROM generate_series(1, {SEEDS}) g"
        )


def _churn(dsn: str) -> None:
    """Transactions of inserts, updates and deletes, of seeds and of new rows."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for r in range(12):
            new = list(range(1000 + 30 * r, 1030 + 30 * r))
            cur.executemany("INSERT INTO items VALUES (%s, 1, 'new')", [(i,) for i in new])
            cur.execute("UPDATE items SET qty = qty + 1 WHERE id = ANY(%s)", (new[::3],))
            cur.execute("DELETE FROM items WHERE id = ANY(%s)", (new[::7],))
            seeds = list(range(1 + 20 * r, 21 + 20 * r))
            cur.execute("UPDATE items SET note = %s WHERE id = ANY(%s)", (f"r{r}", seeds[::2]))
            cur.execute("DELETE FROM items WHERE id = ANY(%s)", (seeds[::5],))
            conn.commit()


def _history(records: list[RawRecord], table: str) -> tuple[Counter[int], Counter[int]]:
    """(changelog events, forensic versions) per key that the source's history implies."""
    events: Counter[int] = Counter()
    versions: Counter[int] = Counter()
    state: dict[int, dict] = {}
    for change in changes(records, table):
        op = change["op"]
        row = change["before"] if op == "d" else change["after"]
        key = row["id"]
        events[key] += 1
        if op == "d":
            state.pop(key, None)
        elif state.get(key) != row:
            state[key] = row
            versions[key] += 1
    return events, versions


def _consumed(lake: Path, app_id: str, topic: str, table: str) -> int:
    """Records of `topic` the lake holds the offsets of (forensic, the last layer)."""
    path = lake / "forensic" / table
    if not DeltaTable.is_deltatable(str(path)):
        return 0
    dt = DeltaTable(str(path))
    return sum(
        offset_of(dt.transaction_version(f"{app_id}:{topic}:{p}:{table}:forensic") or 0)
        for p in range(PARTITIONS)
    )


def _per_key(lake: Path, layer: str, table: str) -> Counter[int]:
    data = read_layer(lake, layer, table)
    return Counter() if data is None else Counter(data.column("id").to_pylist())


# The default run sends a range again after a Connect kill -9
# (tests/distributed/test_connect_e2e.py); this one stays under `make test-slow` so the
# default run stays under 15 min.
@pytest.mark.slow
def test_a_redone_snapshot_and_a_range_sent_again_land_once(
    tmp_path, kafka, fresh_database, capture_factory
):
    dsn = fresh_database()
    _setup(dsn)
    name = f"d{uuid.uuid4().hex[:8]}"
    source = f"s{uuid.uuid4().hex[:8]}"
    topic = table = f"{source}.public.items"
    create_topics(kafka.bootstrap, [topic], partitions=PARTITIONS)
    create_topics(kafka.bootstrap, [f"{source}.transaction"], partitions=1)
    lake = tmp_path / "lake"
    config_path = write_config(
        tmp_path / "pipeline.yaml",
        pipeline=name,
        lake=lake,
        dsn=dsn,
        tables=["public.items"],
        bootstrap=kafka.bootstrap,
        source=source,
        group=f"g-{name}",
        max_events=200,
    )
    config = load_config(config_path)
    capture = capture_factory(dsn, ["public.items"], pipeline=name, source=source)
    capture.collect(lambda recs: distinct_changes(recs, "items") >= SEEDS, timeout=120)
    _churn(dsn)
    records = capture.collect(
        lambda recs: distinct_changes(recs, "items") >= SEEDS + 12 * (30 + 10 + 5 + 10 + 4),
        timeout=120,
    )
    records = [r for r in records if not r.destination.startswith("__debezium-heartbeat")]
    snapshot = [r for r in records if r.value and payload(r).get("op") == "r"]
    assert len(snapshot) == SEEDS
    stream = records[records.index(snapshot[-1]) + 1 :]
    in_topic = sum(1 for r in records if r.destination == topic)
    published = 0

    def send(part: list[RawRecord]) -> None:
        nonlocal published
        publish(kafka.bootstrap, part)
        published += sum(1 for r in part if r.destination == topic)

    def consumed_all(workers: list) -> object:
        return wait_for(
            lambda: _consumed(lake, config.app_id, topic, table) >= published,
            timeout=150,
            what=f"the worker to consume {published} records",
            workers=workers,
        )

    # 1. half the snapshot reaches the lake; the worker dies (Connect dies with it)
    send(snapshot[: SEEDS // 2])
    first = start_worker(config_path, tmp_path / "w", "w1")
    try:
        consumed_all([first])
    finally:
        first.kill()
    # 2. Debezium takes the snapshot again (all of it, new offsets), then streams
    send(snapshot)
    send(stream)
    # 3. Connect is killed again and re-sends a range of the stream, deletes inside
    again = stream[len(stream) // 3 :]
    assert any(r.value and payload(r).get("op") == "d" for r in again)
    send(again)
    assert published == in_topic + SEEDS // 2 + sum(1 for r in again if r.destination == topic)
    second = start_worker(config_path, tmp_path / "w", "w2")
    try:
        consumed_all([second])
    finally:
        second.stop()

    events, versions = _history(records, "items")
    assert _per_key(lake, "changelog", table) == events
    assert _per_key(lake, "forensic", table) == versions
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM items")
        alive = sorted(r[0] for r in cur.fetchall())
    assert sorted(read_layer(lake, "live", table).column("id").to_pylist()) == alive
    capture.engine.close()  # the slot goes idle: verify compares the lake as it is
    report = verify_source(config, config.sources[0], timeout=10)
    assert report.ok, report

"""The pieces of the end-to-end stories on real Kafka Connect (`test_connect_e2e.py`).

A source table with an audit trigger (the source's own history of every change), churn in
transactions of inserts, updates and deletes, the local distributed stack (the session's
broker and Connect worker, `tidemark worker` processes), and the checks every story ends
with: `verify` clean, changelog events and forensic versions per key equal to what the
source's history implies, and every live topic, read from offset 0 by a plain
confluent-kafka consumer that drops repeats by `_tm_position`, equal to the source.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import yaml
from confluent_kafka import Consumer, TopicPartition

from tests.distributed.support import read_layer
from tidemark.config import PipelineConfig, load_config
from tidemark.stack.cluster import DistributedStack
from tidemark.verify import verify_source

ROOT = Path(__file__).resolve().parents[2]
TABLE = "public.items"


def setup_source(dsn: str, *, seeds: int) -> None:
    """`items` with `seeds` rows, and `audit`: one row per change, written by a trigger
    (an update that changes nothing is still a change event, which the changelog keeps, but
    no new version: `changed` tells them apart)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            """
            CREATE TABLE items (id bigint PRIMARY KEY, qty int NOT NULL, note text);
            CREATE TABLE audit (seq bigserial PRIMARY KEY, id bigint NOT NULL, op text NOT NULL,
                                changed boolean NOT NULL);
            CREATE FUNCTION audit_items() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                INSERT INTO audit(id, op, changed) VALUES (OLD.id, 'd', true);
              ELSIF TG_OP = 'UPDATE' THEN
                INSERT INTO audit(id, op, changed) VALUES (NEW.id, 'u', OLD IS DISTINCT FROM NEW);
              ELSE
                INSERT INTO audit(id, op, changed) VALUES (NEW.id, 'c', true);
              END IF;
              RETURN NULL;
            END $$;
            """
        )
        cur.execute(
            f"INSERT INTO items SELECT g, g % 7, 'seed ' || g FROM generate_series(1, {seeds}) g"
        )
        cur.execute(
            "CREATE TRIGGER items_audit AFTER INSERT OR UPDATE OR DELETE ON items "
            "FOR EACH ROW EXECUTE FUNCTION audit_items()"
        )


def churn(dsn: str, *, rounds: int, start: int, seeds: int) -> None:
    """Transactions that insert new rows, update and delete some of them, and update and
    delete seeded rows (deletes inside every window a redelivery could repeat)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for r in range(rounds):
            new = list(range(start + 40 * r, start + 40 * r + 40))
            cur.executemany("INSERT INTO items VALUES (%s, 1, 'new')", [(i,) for i in new])
            cur.execute("UPDATE items SET qty = qty + 1 WHERE id = ANY(%s)", (new[::3],))
            cur.execute("DELETE FROM items WHERE id = ANY(%s)", (new[::7],))
            old = [1 + (17 * r + k) % seeds for k in range(10)]
            cur.execute("UPDATE items SET note = %s WHERE id = ANY(%s)", (f"r{r}", old[::2]))
            cur.execute("DELETE FROM items WHERE id = ANY(%s)", (old[1::5],))
            conn.commit()


@dataclass
class Story:
    """One story's pipeline: config, stack and source."""

    dsn: str
    config: PipelineConfig
    config_path: Path
    stack: DistributedStack
    live_prefix: str

    @property
    def table(self) -> str:
        return f"{self.config.sources[0].name}.{TABLE}"

    @property
    def topic(self) -> str:
        return f"{self.config.sources[0].name}.{TABLE}"


def make_story(
    tmp: Path, *, dsn: str, bootstrap: str, connect: object, max_events: int = 2000
) -> Story:
    """A pipeline with a unique source name (so its own topics and slot) on the session's
    broker and Connect worker."""
    source = f"s{uuid.uuid4().hex[:8]}"
    live_prefix = f"live{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": f"p{uuid.uuid4().hex[:6]}",
                "lake": str(tmp / "lake"),
                "sources": [{"name": source, "kind": "postgres", "dsn": dsn, "tables": [TABLE]}],
                "batching": {"max_events": max_events, "max_latency_ms": 300},
                "kafka": {"bootstrap": bootstrap, "live_topic_prefix": live_prefix},
            }
        )
    )
    config = load_config(path)
    handle = connect  # tests.fixtures.connect.ConnectHandle
    stack = DistributedStack(
        config,
        path,
        tmp / "stack",
        external_broker=True,
        connect=handle.worker,  # type: ignore[attr-defined]
        secrets_file=handle.secrets_file,  # type: ignore[attr-defined]
    )
    return Story(dsn, config, path, stack, live_prefix)


def expected_history(dsn: str, seeded: set[int]) -> tuple[Counter[int], Counter[int]]:
    """(changelog events, forensic versions) per key that the source's history implies:
    a snapshot row per seeded key, then one event per audited change; a version per
    snapshot row, insert and update that changed the row."""
    events: Counter[int] = Counter({k: 1 for k in seeded})
    versions: Counter[int] = Counter({k: 1 for k in seeded})
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, op, changed FROM audit ORDER BY seq")
        for key, op, changed in cur.fetchall():
            events[key] += 1
            if op != "d" and changed:
                versions[key] += 1
    return events, versions


def lake_history(story: Story) -> tuple[Counter[int], Counter[int]]:
    lake = Path(story.config.lake)
    changelog = read_layer(lake, "changelog", story.table)
    forensic = read_layer(lake, "forensic", story.table)
    assert changelog is not None and forensic is not None
    return Counter(changelog.column("id").to_pylist()), Counter(forensic.column("id").to_pylist())


def source_rows(dsn: str) -> dict[int, tuple[int, str | None]]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, qty, note FROM items")
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}


def live_topic_rows(bootstrap: str, topic: str) -> dict[int, tuple[int, str | None]]:
    """The live topic read from offset 0 the way README's consumer does: a record whose
    position (`_tm_position`, or a tombstone's `tm_position` header) is not above the one
    held for its key is a repeat and is dropped."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    state: dict[int, tuple[str, tuple[int, str | None] | None]] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        idle = 0
        while idle < 3:
            batch = consumer.consume(1000, timeout=1.0)
            if not batch:
                idle += 1
                continue
            idle = 0
            for msg in batch:
                if msg.error() is not None:
                    continue
                key = json.loads(msg.key())["id"]
                if msg.value() is None:
                    headers = dict(msg.headers() or [])
                    position = headers.get("tm_position", b"").decode()
                    row = None
                else:
                    value = json.loads(msg.value())
                    position, row = value["_tm_position"], (value["qty"], value["note"])
                held = state.get(key)
                if held is not None and position <= held[0]:
                    continue  # a repeat
                state[key] = (position, row)
    finally:
        consumer.close()
    return {k: v[1] for k, v in state.items() if v[1] is not None}


def check_everything(story: Story, seeded: set[int]) -> None:
    """`verify` clean, per-key history exact, and the live topic equal to the source."""
    report = verify_source(story.config, story.config.sources[0], timeout=120)
    assert report.ok, report
    want_events, want_versions = expected_history(story.dsn, seeded)
    got_events, got_versions = lake_history(story)
    wrong = {k for k in want_events | got_events if want_events[k] != got_events[k]}
    assert not wrong, {k: (want_events[k], got_events[k]) for k in sorted(wrong)[:10]}
    wrong = {k for k in want_versions | got_versions if want_versions[k] != got_versions[k]}
    assert not wrong, {k: (want_versions[k], got_versions[k]) for k in sorted(wrong)[:10]}
    source = source_rows(story.dsn)
    topic = f"{story.live_prefix}.live.{story.table}"
    assert story.config.kafka is not None
    live = live_topic_rows(story.config.kafka.bootstrap, topic)
    missing = sorted(set(source) - set(live))
    extra = sorted(set(live) - set(source))
    stale = sorted(k for k in set(source) & set(live) if source[k] != live[k])
    assert not (missing or extra or stale), (
        f"live topic: {len(missing)} keys missing {missing[:5]}, {len(extra)} deleted keys "
        f"present {extra[:5]}, {len(stale)} stale {stale[:5]}"
    )

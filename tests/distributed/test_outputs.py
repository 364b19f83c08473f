"""Kafka outputs of the worker: compacted live topics a consumer can bootstrap state from,
and poison records going to the dead letters (lake table and topic) while the rest goes on."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.distributed.support import publish, read_layer, start_worker, wait_for, write_config
from tests.distributed.test_worker import _churn, _setup, _source_rows
from tests.fixtures.kafka import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.debezium]


def _read_topic(bootstrap: str, topic: str, partitions: int = 1) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"r-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out, idle = [], 0
    while idle < 3:
        batch = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
        idle = 0 if batch else idle + 1
        out.extend(batch)
    consumer.close()
    return out


def test_live_topic_and_dead_letters(tmp_path, kafka, fresh_database, capture_factory):
    dsn = fresh_database()
    _setup(dsn)
    name, source = f"o{uuid.uuid4().hex[:8]}", f"s{uuid.uuid4().hex[:8]}"
    topic, table = f"{source}.public.items", f"{source}.public.items"
    create_topics(kafka.bootstrap, [topic], partitions=2)
    capture = capture_factory(dsn, ["public.items"], pipeline=name, source=source)
    capture.collect(
        lambda rs: any(r.destination.startswith("__debezium-heartbeat") for r in rs), timeout=120
    )
    total = _churn(dsn, rounds=6)
    records = capture.collect(
        lambda rs: sum(1 for r in rs if r.destination == topic and r.value) >= total, timeout=120
    )
    half = len(records) // 2
    publish(kafka.bootstrap, records[:half])
    poison = Producer({"bootstrap.servers": kafka.bootstrap})
    poison.produce(
        topic, key=b'{"schema":null,"payload":{"id":1}}', value=b"{not json", partition=0
    )
    poison.flush(10)
    publish(kafka.bootstrap, records[half:])
    config = write_config(
        tmp_path / "p.yaml",
        pipeline=name,
        lake=tmp_path / "lake",
        dsn=dsn,
        tables=["public.items"],
        bootstrap=kafka.bootstrap,
        source=source,
        group=f"g-{name}",
        live_prefix=f"out-{name}",
    )
    worker = start_worker(config, tmp_path / "w", "w1", extra=["--no-tx-gate"])
    lake = tmp_path / "lake"
    try:
        wait_for(
            lambda: (
                (read_layer(lake, "changelog", table) or _empty()).num_rows >= total
                and worker.read_stats().get("dead_letters", 0) >= 1
            ),
            timeout=120,
            what="the worker to apply everything",
            workers=[worker],
        )
    finally:
        worker.stop()

    # The rest went on: the lake holds every change once and the source state.
    live = read_layer(lake, "live", table).sort_by("id")
    assert live.column("id").to_pylist() == [r[0] for r in _source_rows(dsn)]

    # The poison record is in the lake's dead letters and on the dead-letter topic.
    letters = read_layer(lake, "_tidemark", "dead_letters").to_pylist()
    assert len(letters) == 1
    assert letters[0]["raw_value"] == "{not json"
    assert letters[0]["origin"].startswith(f"kafka:{topic}/0@")
    dlq = _read_topic(kafka.bootstrap, f"tidemark.{name}.dead_letters")
    assert len(dlq) == 1
    assert json.loads(dlq[0].value())["raw_value"] == "{not json"

    # A consumer bootstraps the live state from the compacted topic: last value per key,
    # a tombstone removes the key.
    state: dict = {}
    for msg in _read_topic(kafka.bootstrap, f"out-{name}.live.{table}"):
        key = orjson.loads(msg.key())["id"]
        if msg.value() is None:
            state.pop(key, None)
        else:
            state[key] = orjson.loads(msg.value())
    rows = _source_rows(dsn)
    assert sorted(state) == [r[0] for r in rows]
    assert [(state[r[0]]["name"], state[r[0]]["qty"], state[r[0]]["price"]) for r in rows] == [
        (r[1], r[2], str(r[3])) for r in rows
    ]


def _empty():
    import pyarrow as pa

    return pa.table({})


def test_dead_letter_topic_name():
    from tidemark.stream_processors.distributed.topics import dead_letter_topic, live_topic

    assert dead_letter_topic("demo") == "tidemark.demo.dead_letters"
    assert live_topic("cdc", "shop.public.customers") == "cdc.live.shop.public.customers"

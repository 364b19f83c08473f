"""The test broker itself: topics, produce, consume from an offset (what the worker relies on)."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.kafka


def test_produce_and_consume_from_an_offset(kafka, topic_factory):
    topic = topic_factory("fixture", partitions=2)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    for i in range(10):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"g-{topic}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 3)])
    got = []
    deadline = time.monotonic() + 15
    while len(got) < 7 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.partition(), msg.offset(), msg.value()))
    consumer.close()
    assert sorted(got) == sorted(
        [(0, o, f"v{2 * o}".encode()) for o in range(5)]
        + [(1, o, f"v{2 * o + 1}".encode()) for o in range(3, 5)]
    )


def test_topic_factory_names_are_unique(topic_factory):
    assert topic_factory("x") != topic_factory("x")


def test_gap_verifier_fetches_the_offset_directly(kafka, topic_factory):
    from tidemark.stream_processors.distributed.gaps import kafka_gap_verifier

    topic = topic_factory("gaps")
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(3):
        producer.produce(topic, value=f"v{i}".encode(), partition=0)
    producer.flush(10)
    verify = kafka_gap_verifier(kafka.bootstrap, timeout_s=3)
    assert verify(topic, 0, 1) == 1  # it exists: the consumer must seek back
    assert verify(topic, 0, 3) is None  # nothing there (yet)

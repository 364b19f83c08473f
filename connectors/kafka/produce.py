"""Produce change records to Kafka exactly as a Debezium Kafka Connect worker would.

Topic = the record's destination, key and value in Connect's JSON form
(`schemas.enable=true`), and Java's default partitioner (murmur2 of the key bytes), so a key
lands in the partition Connect would choose. Tests and benchmarks use it to feed workers
records captured by the embedded engine, and to deliver a range twice (a redelivery).
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Producer

from tidemark.kernel.records import RawRecord


def publish(bootstrap: str, records: Iterable[RawRecord], *, skip_heartbeats: bool = True) -> int:
    """Produce records like Kafka Connect: topic = destination, key = the JSON key, and
    Java's default partitioner (murmur2 of the key bytes), so one key stays in one partition."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 10,
        }
    )
    count = 0
    for record in records:
        if skip_heartbeats and record.destination.startswith("__debezium-heartbeat"):
            continue
        key, value = record.enveloped()
        while True:
            try:
                producer.produce(
                    record.destination,
                    key=None if key is None else key.encode(),
                    value=None if value is None else value.encode(),
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.5)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} record(s) were not delivered within 30 s")
    return count

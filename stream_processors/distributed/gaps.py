"""Tell a real gap in a partition from a consumer that skipped records.

A lane that receives offset N+k while it expects N asks the broker directly: it fetches
from N with a throwaway consumer (no group) and looks at the first offset it gets. If that
is N, the records exist and the consumer must seek back; if it is above N, offsets
N..first-1 do not exist (compacted away, or Kafka transaction markers) and the lane goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def kafka_gap_verifier(
    bootstrap: str, *, timeout_s: float = 5.0
) -> Callable[[str, int, int], int | None]:
    """A `verify_gap(topic, partition, offset) -> first existing offset >= offset | None`."""

    def verify(topic: str, partition: int, offset: int) -> int | None:
        from confluent_kafka import Consumer, TopicPartition

        consumer: Any = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "tidemark-gap-check",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.assign([TopicPartition(topic, partition, offset)])
            for message in consumer.consume(1, timeout=timeout_s):
                if message.error() is None:
                    return int(message.offset())
            return None
        finally:
            consumer.close()

    return verify

"""Where a Kafka partition ends, also on the Tansu broker (whose watermark counts batches)."""

from __future__ import annotations

import time
from typing import Any


def end_offsets(
    consumer: Any, partitions: list[Any], timeout_s: float
) -> dict[tuple[str, int], int]:
    """The offset after each partition's last record.

    The high watermark, checked by reading from the record before it: the Tansu broker (the
    local and test broker) reports a watermark that counts record batches, not records (one
    batch of 10 records: watermark 1, offsets 0..9), so the last batch is read to find its
    last record. With Kafka this reads one record per partition and agrees with the
    watermark. All partitions are read together, until the broker has sent nothing for 0.2 s.
    """
    from confluent_kafka import TopicPartition

    ends: dict[tuple[str, int], int] = {}
    starts = []
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        ends[(tp.topic, tp.partition)] = int(high)
        if high > low:
            starts.append(TopicPartition(tp.topic, tp.partition, int(high) - 1))
    if not starts:
        return ends
    consumer.assign(starts)
    deadline = time.monotonic() + timeout_s
    seen = False
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                if seen:
                    break
                continue
            if message.error() is None:
                seen = True
                key = (message.topic(), message.partition())
                ends[key] = max(ends[key], int(message.offset()) + 1)
    finally:
        consumer.unassign()
    return ends

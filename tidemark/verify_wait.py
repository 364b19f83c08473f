"""How `verify` waits for the lake to reach the source snapshot's position C.

Embedded runtime (`tidemark/verify.py`): the batch log's position passes C (the lake is the
source of truth; a lake that keeps no record of its positions falls back to: everything up to
C was sent and the lake has been quiet for a few batch latencies).

Distributed runtime: Kafka Connect confirms a position to Postgres once the records up to it
are in Kafka, not once the lake has them, so the slot says nothing about the lake. Instead:
(1) wait until Connect's slot confirmed C (every change up to C is in the topics; a slot
without a consumer for `CONNECT_RESTART_S` is a stopped Connect, and this step ends),
(2) take the end offset of every partition of the source's topics, and
(3) wait until the lake has applied each partition up to that offset (the offsets every
layer commit records, per partition). Then every change up to C is in the lake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.postgres.snapshot import Snapshot

logger = logging.getLogger(__name__)

CONNECT_RESTART_S = 45.0
"""How long Connect's slot may stay inactive before `verify` takes the connector as stopped
and compares what the topics hold: a restarting Connect worker (JVM start, group join, task
start) leaves its slot without a consumer for 10-40 s on a loaded machine."""


def slot_state(snapshot: Snapshot, slot: str) -> tuple[bool, int | None, int | None]:
    """(active, confirmed flush LSN, LSN sent by its WAL sender) of a replication slot."""
    found = snapshot.fetch(
        "SELECT s.active, (s.confirmed_flush_lsn - '0/0')::bigint, (r.sent_lsn - '0/0')::bigint"
        " FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"
        " WHERE s.slot_name = %s",
        (slot,),
    )
    if not found:
        return False, None, None
    return bool(found[0][0]), found[0][1], found[0][2]


def wait_distributed(
    config: PipelineConfig,
    source: SourceConfig,
    snapshot: Snapshot,
    *,
    timeout: float,
    on_wait: Callable[[str | None, str], None] | None = None,
) -> str | None:
    """Wait until the lake holds every change up to the snapshot (see the module doc).

    Returns:
        What the lake reached, as `<applied>/<wanted> records` (None: nothing to wait for).
    """
    from confluent_kafka import Consumer, KafkaException

    from tidemark.connectors.kafka_connect import connect_slot
    from tidemark.observe.lake import LakeMeta
    from tidemark.observe.source import lake_offset, partition_lags

    assert config.kafka is not None
    started = time.monotonic()
    cutoff = f"{snapshot.lsn:016x}"
    slot = connect_slot(config.pipeline, source.name)
    inactive_since: float | None = None
    while True:
        active, flushed, _ = slot_state(snapshot, slot)
        if flushed is not None and flushed >= snapshot.lsn:
            break
        if not active:
            inactive_since = inactive_since or time.monotonic()
            if time.monotonic() - inactive_since >= CONNECT_RESTART_S:
                logger.info("slot %s is inactive: comparing what the topics hold", slot)
                break
        else:
            inactive_since = None
        if time.monotonic() - started > timeout:
            logger.warning("Kafka Connect did not confirm %s within %.0f s", cutoff, timeout)
            break
        if on_wait is not None:
            on_wait(None, cutoff)
        time.sleep(0.5)
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap,
            "group.id": f"tidemark-verify-{config.pipeline}",
            "enable.auto.commit": False,
            "log_level": 0,  # a stopped broker is reported below, once
        }
    )
    meta = LakeMeta(config.lake, storage_options=config.storage_options, max_age_s=0.0)
    try:
        try:
            wanted = {
                (p.topic, p.table, p.partition): p.end_offset
                for p in partition_lags(config, source, meta, consumer, timeout_s=5.0)
            }
        except KafkaException as exc:
            logger.warning(
                "the broker %s is not reachable (%s): comparing the lake as it is",
                config.kafka.bootstrap,
                exc.args[0].str() if exc.args else exc,
            )
            return None
        while True:
            left = sum(
                max(0, end - lake_offset(config, meta, topic, table, partition))
                for (topic, table, partition), end in wanted.items()
            )
            reached = f"{sum(wanted.values()) - left}/{sum(wanted.values())} records"
            if left == 0:
                return reached
            if time.monotonic() - started > timeout:
                logger.warning(
                    "the lake did not apply %s more records within %.0f s", left, timeout
                )
                return reached
            if on_wait is not None:
                on_wait(reached, cutoff)
            time.sleep(0.5)
    finally:
        consumer.close()
        meta.close()

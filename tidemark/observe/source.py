"""Where each source stands, asked read-only: Postgres slots, the broker, Kafka Connect.

Postgres: one short read-only session per source reads the pipeline's replication slot (is a
consumer attached, how many bytes of WAL it has not confirmed), the source's clock, and,
when `track_commit_timestamp` is on, the commit time of its newest transaction
(`pg_last_committed_xact()`): what freshness is measured against (`freshness.py`).

Distributed runtime (a `kafka:` section): per partition of each source topic, the broker's
end offset against the offset the lake has applied (each layer's Delta txn version records
it: `stream_processors/distributed/commits.py`), and, given a Kafka Connect URL, the
connector's and its tasks' state. A part that cannot be reached gives an error string in
its place, never an exception: the status must show what it can.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.kafka.offsets import end_offsets
from tidemark.kernel.columns import Layer
from tidemark.kernel.secrets import mask
from tidemark.observe.lake import LakeMeta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotProbe:
    """A Postgres source's replication slot and clock.

    Attributes:
        slot: the slot looked at (the embedded engine's, else Kafka Connect's).
        exists: the slot exists (False before the pipeline's first run).
        active: a consumer (the engine, or Connect) is attached right now.
        lag_bytes: WAL the consumer has not confirmed (`pg_current_wal_lsn() -
            confirmed_flush_lsn`), never negative.
        clock: the source's current time.
        latest_commit: commit time of the source's newest transaction, None when
            `track_commit_timestamp` is off (or nothing committed since it was turned on).
        commit_times: `track_commit_timestamp` is on.
        error: why the source could not be asked, if it could not.
    """

    slot: str
    exists: bool = False
    active: bool = False
    lag_bytes: int | None = None
    clock: datetime | None = None
    latest_commit: datetime | None = None
    commit_times: bool = False
    error: str | None = None


def slot_names(config: PipelineConfig, source: SourceConfig) -> tuple[str, str]:
    """(embedded engine's slot, Kafka Connect's slot) of one Postgres source."""
    from tidemark.connectors.kafka_connect import connect_slot
    from tidemark.connectors.postgres.settings import replication_name

    return (
        replication_name(config.pipeline, source.name),
        connect_slot(config.pipeline, source.name),
    )


_SLOT_SQL = """
SELECT clock_timestamp(),
       current_setting('track_commit_timestamp') = 'on',
       s.slot_name, s.active,
       greatest(0, (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint)
FROM (SELECT 1) one
LEFT JOIN pg_replication_slots s ON s.slot_name = ANY(%s)
ORDER BY s.active DESC NULLS LAST, s.slot_name = %s DESC
LIMIT 1
"""


def probe_postgres(
    config: PipelineConfig, source: SourceConfig, *, timeout_s: int = 3
) -> SlotProbe:
    """Ask one Postgres source about its slot and newest commit (read-only, one session)."""
    import psycopg2

    embedded, connect = slot_names(config, source)
    preferred = connect if config.kafka is not None else embedded
    try:
        conn = psycopg2.connect(
            source.dsn,
            connect_timeout=timeout_s,
            options=f"-c statement_timeout={timeout_s * 1000}",
            application_name="tidemark-status",
        )
    except psycopg2.Error as exc:
        return SlotProbe(preferred, error=mask(str(exc).strip().splitlines()[0]))
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(_SLOT_SQL, ([embedded, connect], preferred))
            clock, commit_times, slot, active, lag = cur.fetchone() or (None,) * 5
            latest = None
            if commit_times:
                cur.execute("SELECT (pg_last_committed_xact()).timestamp")
                row = cur.fetchone()
                latest = row[0] if row else None
    except psycopg2.Error as exc:
        return SlotProbe(preferred, error=mask(str(exc).strip().splitlines()[0]))
    finally:
        conn.close()
    return SlotProbe(
        slot=slot or preferred,
        exists=slot is not None,
        active=bool(active),
        lag_bytes=None if lag is None else int(lag),
        clock=clock,
        latest_commit=latest,
        commit_times=bool(commit_times),
    )


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a source topic: the broker's end against what the lake applied."""

    topic: str
    table: str
    partition: int
    end_offset: int
    lake_offset: int

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - self.lake_offset)


@dataclass(frozen=True)
class ConnectorState:
    """A Debezium connector on Kafka Connect and its tasks."""

    name: str
    state: str
    tasks: list[str] = field(default_factory=list)
    error: str | None = None
    offsets: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DistributedProbe:
    """The distributed runtime of one source: consumer lag per partition, connector state."""

    partitions: list[PartitionLag] = field(default_factory=list)
    connector: ConnectorState | None = None
    error: str | None = None

    def table_lag(self, table: str) -> int | None:
        """Records of `table`'s topic the lake has not applied (None when unknown)."""
        lags = [p.lag for p in self.partitions if p.table == table]
        return sum(lags) if lags else None


def probe_distributed(
    config: PipelineConfig,
    source: SourceConfig,
    meta: LakeMeta,
    *,
    connect_url: str | None = None,
    timeout_s: float = 3.0,
) -> DistributedProbe:
    """Consumer lag of one source's topics (and its connector's state, given `connect_url`)."""
    assert config.kafka is not None
    connector = _connector_state(config, source, connect_url) if connect_url else None
    try:
        from confluent_kafka import Consumer
    except ImportError:
        return DistributedProbe(connector=connector, error="confluent-kafka is not installed")
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap,
            "group.id": f"tidemark-status-{config.pipeline}",
            "enable.auto.commit": False,
            "socket.timeout.ms": int(timeout_s * 1000),
        }
    )
    try:
        partitions = partition_lags(config, source, meta, consumer, timeout_s=timeout_s)
    except Exception as exc:  # broker down or unreachable: show it, do not fail the page
        return DistributedProbe([], connector, error=mask(str(exc).splitlines()[0]))
    finally:
        consumer.close()
    return DistributedProbe(partitions, connector)


def lake_offset(
    config: PipelineConfig, meta: LakeMeta, topic: str, table: str, partition: int
) -> int:
    """The next offset of `topic`/`partition` the lake has not applied: the lowest over the
    table's layers (each records every partition's offset in a Delta txn action)."""
    from tidemark.stream_processors.distributed.commits import offset_of
    from tidemark.stream_processors.distributed.topics import lane_stream

    applied = []
    for layer in Layer:
        if layer not in config.layers_for(table):
            continue
        delta = meta.table(layer.value, table)
        stream = lane_stream(config.app_id, topic, partition, epoch=config.kafka_epoch)
        app = f"{stream}:{table}:{layer.value}"
        version = delta.transaction_version(app) if delta is not None else None
        applied.append(offset_of(int(version or 0)))
    return min(applied) if applied else 0


def partition_lags(
    config: PipelineConfig,
    source: SourceConfig,
    meta: LakeMeta,
    consumer: Any,
    *,
    timeout_s: float = 3.0,
) -> list[PartitionLag]:
    """Every partition of the source's topics: the broker's end offset and the lake's."""
    from confluent_kafka import TopicPartition

    from tidemark.stream_processors.distributed.topics import source_topics

    topics = source_topics([source])
    metadata = consumer.list_topics(timeout=timeout_s).topics
    every = [
        TopicPartition(t.topic, number)
        for t in topics
        if t.topic in metadata
        for number in sorted(metadata[t.topic].partitions)
    ]
    ends = end_offsets(consumer, every, timeout_s)
    return [
        PartitionLag(
            spec.topic,
            spec.table,
            number,
            int(ends[(spec.topic, number)]),
            lake_offset(config, meta, spec.topic, spec.table, number),
        )
        for spec in topics
        if spec.topic in metadata
        for number in sorted(metadata[spec.topic].partitions)
    ]


def _connector_state(config: PipelineConfig, source: SourceConfig, url: str) -> ConnectorState:
    from tidemark.connectors.kafka_connect import KafkaConnect, connector_name

    name = connector_name(config.pipeline, source.name)
    client = KafkaConnect(url, timeout=3.0, retries=1)
    try:
        status = client.status(name)
        offsets = client.offsets(name) if status is not None else []
    except Exception as exc:  # Connect down: say so
        return ConnectorState(name, "UNREACHABLE", error=mask(str(exc).splitlines()[0]))
    if status is None:
        return ConnectorState(name, "NOT REGISTERED")
    return ConnectorState(
        name,
        status.state if status.tasks else f"{status.state} (no tasks)",
        [f"{t.id}: {t.state}" for t in status.tasks],
        status.last_error,
        {k: str(v) for entry in offsets for k, v in entry.get("offset", {}).items()},
    )

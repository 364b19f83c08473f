"""The Faust app: one agent per source topic, whole fetches in bulk, one commit per layer.

Faust gives the consumer group (partition assignment, rebalances, heartbeats) and the agents;
records reach each agent a fetch at a time (`bulk.py`: Faust's per-message path was the
bottleneck), and each batch of all the worker's partitions of a topic is one Delta commit
per layer (`group.py`). Exactly-once comes from the lanes (`lane.py`), not from Faust's
offset commits: on assignment each partition's lane reads its offset back from the lake and
the consumer seeks there; every batch re-checks it. Faust's `exactly_once` guarantee is not
used (it needs Kafka transactions, and the lake already deduplicates).

Decoding, milestoning and Delta commits block, so they run in a thread pool; the event loop
stays free for heartbeats. Topics run in parallel; a topic's batches one at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidemark.kernel.columns import Layer
from tidemark.sinks.writer import StreamWriter
from tidemark.stream_processors.distributed.bulk import install, take
from tidemark.stream_processors.distributed.commits import Outcome
from tidemark.stream_processors.distributed.group import TopicGroup
from tidemark.stream_processors.distributed.lane import (
    KafkaRecord,
    PartitionLane,
    lane_decoder,
)
from tidemark.stream_processors.distributed.topics import SourceTopic, lane_stream, topic_stream

log = logging.getLogger(__name__)

METADATA_MAX_AGE_MS = 5_000
BEACON_S = 5.0


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs, parsed once from the pipeline config.

    Attributes:
        pipeline: pipeline name (dead-letter topic name).
        app_id: the pipeline's Delta app id prefix; each lane appends `:<topic>:<partition>`.
        lake: lake root; storage_options: delta-rs options.
        topics: the source topics to consume.
        layers: layers per lake table.
        bootstrap: Kafka bootstrap servers; group: the consumer group.
        max_events / max_latency_s: `stream.take` size and time bounds.
        live_prefix: publish `<prefix>.live.<table>` topics when set.
        datadir: Faust's local directory; stats_path: where the worker writes its counters.
        web_port: Faust's web server (bound to 127.0.0.1) or None for off.
        session_timeout_s: consumer group session timeout.
        epoch: the topics' epoch (`kafka.epoch`): names the partitions' streams.
        instance_id: static group membership (`group.instance.id`): a worker restarted
            with the same id within the session timeout gets its partitions back without
            a rebalance.
        threads: size of the thread pool that runs lanes.
        gate_transactions: hold records until their transaction's END marker was seen.
        partition_buckets: new live/forensic tables get buckets that follow the Kafka
            partition (writers never conflict); False: the sinks' key-range buckets.
        write_modes: live and forensic write mode per lake table (copy-on-write default).
    """

    pipeline: str
    app_id: str
    lake: str
    topics: tuple[SourceTopic, ...]
    layers: Mapping[str, frozenset[Layer]]
    bootstrap: str
    group: str
    datadir: Path
    storage_options: Mapping[str, str] = field(default_factory=dict)
    write_modes: Mapping[str, str] = field(default_factory=dict)
    max_events: int = 20_000
    max_latency_s: float = 1.0
    live_prefix: str | None = None
    stats_path: Path | None = None
    web_port: int | None = None
    session_timeout_s: float = 60.0
    instance_id: str | None = None
    epoch: int = 0
    threads: int = 4
    gate_transactions: bool = True
    partition_buckets: bool = True


@dataclass
class WorkerStats:
    """Counters the worker writes to `stats_path` (tests and benchmarks read them)."""

    events: int = 0
    batches: int = 0
    dead_letters: int = 0
    seeks: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    first_commit: float | None = None
    first_fetch: float | None = None
    last_commit: float | None = None
    assigned: list[str] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        now = time.time()
        self.events += outcome.events
        self.batches += outcome.batches
        self.dead_letters += outcome.dead_letters
        self.commit_seconds.extend(outcome.commit_seconds)
        del self.commit_seconds[:-10_000]
        for phase, seconds in outcome.phase_seconds.items():
            self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds
        if outcome.batches:
            self.first_commit = self.first_commit or now
            self.last_commit = now

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(vars(self)))
        tmp.replace(path)


class LaneRegistry:
    """The lanes of the partitions this worker holds (created on assignment), and per topic
    the lake, decoder and `TopicGroup` they share."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        lake_factory: Callable[[str], StreamWriter],
        outputs: Any = None,
        gate: Any = None,
        gated: frozenset[str] = frozenset(),
        verify_gap: Callable[[str, int, int], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.verify_gap = verify_gap
        self.gated = gated
        self.by_topic = {t.topic: t for t in settings.topics}
        self.lake_factory = lake_factory
        self.outputs = outputs
        self.gate = gate
        self.lanes: dict[tuple[str, int], PartitionLane] = {}
        self.groups: dict[str, TopicGroup] = {}
        self._lock = threading.Lock()

    def group(self, topic: str) -> TopicGroup:
        with self._lock:
            return self._group(topic)

    def _group(self, topic: str) -> TopicGroup:
        group = self.groups.get(topic)
        if group is None:
            spec = self.by_topic[topic]
            group = self.groups[topic] = TopicGroup(
                spec,
                lake=self.lake_factory(
                    topic_stream(self.settings.app_id, topic, epoch=self.settings.epoch)
                ),
                layers=self.settings.layers[spec.table],
                decode=lane_decoder(spec),
                outputs=self.outputs,
                partition_buckets=self.settings.partition_buckets,
            )
        return group

    def get(self, topic: str, partition: int) -> PartitionLane:
        with self._lock:
            lane = self.lanes.get((topic, partition))
            if lane is None:
                spec = self.by_topic[topic]
                group = self._group(topic)
                group.forget_rows()  # the partition may have been written elsewhere
                lane = PartitionLane(
                    spec,
                    partition,
                    lake=group.lake,
                    layers=self.settings.layers[spec.table],
                    outputs=self.outputs,
                    gate=self.gate if spec.source in self.gated else None,
                    partition_buckets=self.settings.partition_buckets,
                    verify_gap=self.verify_gap,
                    decode=group.decode,
                    lane_app=lane_stream(
                        self.settings.app_id, topic, partition, epoch=self.settings.epoch
                    ),
                )
                self.lanes[(topic, partition)] = lane
            return lane

    def drop(self, topic: str, partition: int) -> None:
        with self._lock:
            lane = self.lanes.pop((topic, partition), None)
            group = self.groups.get(topic)
        if lane is not None:
            lane.close()
        if group is not None:
            group.forget_rows()

    def close(self) -> None:
        for key in list(self.lanes):
            self.drop(*key)
        for group in self.groups.values():
            group.lake.close()


def build_app(
    settings: WorkerSettings,
    *,
    lake_factory: Callable[[str], StreamWriter],
    outputs: Any = None,
    gate: Any = None,
    gated: frozenset[str] = frozenset(),
    verify_gap: Callable[[str, int, int], int | None] | None = None,
    on_outcome: Callable[[str, Any], None] | None = None,
    beacon: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """The Faust app of one worker; run it with `faust.Worker(app).execute_from_commandline()`.

    `on_outcome(topic, outcome)` is told what each commit of a topic's lanes did (metrics);
    `beacon(state)` gets the worker's state every `BEACON_S` (`tidemark status` shows it).
    """
    import faust
    from faust.types import TP

    web = (
        {"web_enabled": False}
        if settings.web_port is None
        else {
            "web_enabled": True,
            "web_bind": "127.0.0.1",
            "web_port": settings.web_port,
            "web_host": "127.0.0.1",
        }
    )
    app = faust.App(
        settings.group,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        datadir=str(settings.datadir),
        key_serializer="raw",
        value_serializer="raw",
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        consumer_group_instance_id=settings.instance_id,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 1.0),
        stream_buffer_maxsize=max(settings.max_events * 2, 4096),
        broker_max_poll_records=min(settings.max_events, 10_000),
        consumer_max_fetch_size=8 * 1024 * 1024,  # per partition: ~2,500 envelopes a fetch
        # Topics created after the worker started (Connect's, as tables get their first
        # change) join the subscription at the next metadata refresh.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        **web,
    )
    consumer = install(app)
    registry = LaneRegistry(
        settings,
        lake_factory=lake_factory,
        outputs=outputs,
        gate=gate,
        gated=gated,
        verify_gap=verify_gap,
    )
    stats = WorkerStats()
    pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="lane")
    app.tidemark = (registry, stats)  # type: ignore[attr-defined]

    beaconed = [0.0]

    def write_stats() -> None:
        stats.assigned = sorted(f"{t}/{p}" for t, p in registry.lanes)
        if settings.stats_path is not None:
            stats.write(settings.stats_path)
        if beacon is not None and time.monotonic() - beaconed[0] >= BEACON_S:
            beaconed[0] = time.monotonic()
            beacon(
                {
                    "group": settings.group,
                    "partitions": stats.assigned,
                    "events": stats.events,
                    "batches": stats.batches,
                    "dead_letters": stats.dead_letters,
                    "last_commit": stats.last_commit,
                }
            )

    async def run_group(topic: str, work: Mapping[int, Sequence[KafkaRecord]]) -> None:
        loop = asyncio.get_running_loop()
        assigned = consumer.assignment()
        lanes = {}
        for partition, records in work.items():
            if TP(topic, partition) in assigned:  # else revoked since the fetch
                lane = await loop.run_in_executor(pool, registry.get, topic, partition)
                lanes[lane] = records
        if not lanes:
            return
        group = registry.group(topic)
        outcome = await loop.run_in_executor(pool, group.apply, lanes)
        stats.add(outcome)
        if on_outcome is not None:
            on_outcome(topic, outcome)
        for partition, offset in outcome.seeks.items():
            stats.seeks += 1
            consumer.request_seek(TP(topic, partition), offset)

    def first_fetched() -> None:
        if stats.first_fetch is None:
            stats.first_fetch = time.time()

    def make_agent(spec: SourceTopic) -> Callable[[Any], Any]:
        inbox = consumer.inbox(spec.topic, max_records=2 * settings.max_events)

        async def agent(stream: Any) -> None:
            # The stream itself stays empty: `BulkConsumer` hands this topic's records to
            # `inbox` a fetch at a time instead of message by message.
            while True:
                work = await take(
                    inbox,
                    max_events=settings.max_events,
                    within=settings.max_latency_s,
                    on_first=first_fetched,
                )
                for records in work.values():
                    records.sort(key=lambda r: r.offset)
                await run_group(spec.topic, work)
                write_stats()

        return agent

    for spec in settings.topics:
        channel = app.topic(
            spec.topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )
        app.agent(channel, name=f"tidemark.{spec.table}")(make_agent(spec))

    # faust's stub types receivers as (sender, *args, signal=...); ours name their argument.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: Any, revoked: set[Any], **_: Any) -> None:
        # Finish the in-flight batch before giving partitions up (Faust waits for this
        # handler; it does not know about batches taken in bulk).
        loop = asyncio.get_running_loop()
        for topic in {tp.topic for tp in revoked} & set(registry.groups):
            await loop.run_in_executor(pool, registry.groups[topic].wait_idle)
        for tp in revoked:
            registry.drop(tp.topic, tp.partition)
        write_stats()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app_: Any, assigned: set[Any], **_: Any) -> None:
        loop = asyncio.get_running_loop()
        for tp in assigned:
            if tp.topic in registry.by_topic:
                # Read the lane's offset from the lake now; the bulk consumer seeks there
                # before its next fetch (after the rebalance, not inside it). The lane
                # drops what is below its offset and asks to seek back if above it.
                lane = await loop.run_in_executor(pool, registry.get, tp.topic, tp.partition)
                consumer.request_seek(tp, lane.next_offset)
                log.info(
                    "assigned %s/%s: the lake holds offsets below %s",
                    tp.topic,
                    tp.partition,
                    lane.next_offset,
                )
        write_stats()

    @app.timer(interval=max(settings.max_latency_s, 0.5))
    async def flush_held() -> None:
        """Lanes holding records for a transaction END re-check without new records."""
        held: dict[str, dict[int, Sequence[KafkaRecord]]] = defaultdict(dict)
        for (topic, partition), lane in list(registry.lanes.items()):
            if lane.has_pending:
                held[topic][partition] = []
        for topic, work in held.items():
            await run_group(topic, work)
        write_stats()  # a batch committed here counts like one from the agent; beacons

    @app.on_after_configured.connect  # type: ignore[arg-type]
    def _configured(app_: Any, **_: Any) -> None:  # pragma: no cover - logging only
        log.info("worker for %s topics", len(settings.topics))

    return app


def gated_sources(settings: WorkerSettings) -> frozenset[str]:
    """The sources whose lanes are gated: all of them, unless the gate is off. A source
    whose transaction topic does not exist yet is followed once it appears (`txgate.py`);
    records that name no transaction (snapshots, connectors without transaction metadata)
    are never held."""
    if not settings.gate_transactions:
        return frozenset()
    return frozenset(t.source for t in settings.topics)

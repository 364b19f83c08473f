"""`tidemark worker --config FILE`: a Faust worker of the distributed runtime.

Start as many as there are partitions to share; they form one consumer group and split
the partitions. Each partition's progress lives in the lake (see docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tidemark.state import state_dir
from tidemark.stream_processors.distributed.app import WorkerSettings
from tidemark.stream_processors.distributed.errors import WorkerConfigError
from tidemark.stream_processors.distributed.topics import source_topics

log = logging.getLogger(__name__)


def worker_settings(
    cfg: Any,
    *,
    web_port: int | None,
    session_timeout_s: float,
    threads: int,
    stats_path: Path | None,
    gate_transactions: bool = True,
    partition_buckets: bool = True,
    instance_id: str | None = None,
) -> WorkerSettings:
    """Settings of one worker from a `PipelineConfig`."""
    if cfg.kafka is None:
        raise WorkerConfigError(
            "the pipeline config has no `kafka:` section",
            hint="add `kafka: {bootstrap: host:9092}`",
        )
    topics = tuple(source_topics(cfg.sources))
    group = cfg.kafka.group or f"tidemark-{cfg.pipeline}"
    return WorkerSettings(
        pipeline=cfg.pipeline,
        app_id=cfg.app_id,
        lake=cfg.lake,
        storage_options=dict(cfg.storage_options),
        topics=topics,
        layers={t.table: cfg.layers_for(t.table) for t in topics},
        write_modes={t.table: cfg.write_mode_for(t.table) for t in topics},
        bootstrap=cfg.kafka.bootstrap,
        group=group,
        datadir=state_dir() / "faust" / group,
        max_events=cfg.batching.max_events,
        max_latency_s=cfg.batching.max_latency_ms / 1000,
        live_prefix=cfg.kafka.live_topic_prefix,
        stats_path=stats_path,
        web_port=web_port,
        session_timeout_s=session_timeout_s,
        threads=threads,
        gate_transactions=gate_transactions,
        partition_buckets=partition_buckets,
        instance_id=instance_id,
        epoch=cfg.kafka.epoch,
    )


def check_epoch(cfg: Any) -> None:
    """Refuse to start when the lake has applied a partition further than the broker holds:
    the topics were created anew (a new broker, deleted topics) and their offsets start
    again at 0, so the lake's would skip records silently.

    Raises:
        WorkerConfigError: naming the partition and the fix (`kafka.epoch`).
    """
    from confluent_kafka import Consumer

    from tidemark.observe.lake import LakeMeta
    from tidemark.observe.source import partition_lags

    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap,
            "group.id": f"tidemark-epoch-{cfg.pipeline}",
            "enable.auto.commit": False,
        }
    )
    meta = LakeMeta(cfg.lake, storage_options=cfg.storage_options, max_age_s=0.0)
    try:
        for source in cfg.sources:
            for p in partition_lags(cfg, source, meta, consumer, timeout_s=10.0):
                if p.lake_offset > p.end_offset:
                    raise WorkerConfigError(
                        f"partition `{p.topic}/{p.partition}` ends at offset {p.end_offset}, "
                        f"but the lake has applied it up to {p.lake_offset}: the topic was "
                        "created anew (a new broker?)",
                        hint=f"set `kafka.epoch: {cfg.kafka.epoch + 1}` in the pipeline config "
                        "to read the new topics from their start (docs/distributed.md, epochs)",
                    )
    finally:
        consumer.close()
        meta.close()


def seed_live_topics(settings: WorkerSettings, outputs: Any, created: list[str]) -> None:
    """Live topics this worker created start from the lake's live rows (`outputs.seed_from`)."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    from tidemark.observe.lake import has_deletion_vectors, table_uri
    from tidemark.stream_processors.distributed.topics import live_topic

    assert settings.live_prefix is not None
    options = dict(settings.storage_options) or None

    def read(table: str) -> Any:
        uri = table_uri(settings.lake, "live", table)
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        delta = DeltaTable(uri, storage_options=options)
        if has_deletion_vectors(delta):  # merge-on-read: rows as readers see them
            return pa.table(
                QueryBuilder().register("t", delta).execute("SELECT * FROM t").read_all()
            )
        return delta.to_pyarrow_table()

    tables = [
        t.table for t in settings.topics if live_topic(settings.live_prefix, t.table) in created
    ]
    outputs.seed_from(tables, read)


def run_worker(
    settings: WorkerSettings,
    *,
    loglevel: str = "warn",
    on_outcome: Callable[[str, Any], None] | None = None,
) -> None:
    """Build the app with the real lake, outputs and transaction gate, and run it."""
    import faust
    from confluent_kafka.admin import AdminClient

    from tidemark.sinks.beacons import write_beacon
    from tidemark.sinks.lake import Lake
    from tidemark.stream_processors.distributed.app import build_app, gated_sources
    from tidemark.stream_processors.distributed.gaps import kafka_gap_verifier
    from tidemark.stream_processors.distributed.outputs import KafkaOutputs, ensure_topics
    from tidemark.stream_processors.distributed.topics import (
        dead_letter_topic,
        live_topic,
        transaction_topic,
    )
    from tidemark.stream_processors.distributed.txgate import (
        TransactionGate,
        TransactionTopicReader,
    )

    settings.datadir.mkdir(parents=True, exist_ok=True)
    existing = set(
        AdminClient({"bootstrap.servers": settings.bootstrap}).list_topics(timeout=15).topics
    )
    missing = [t.topic for t in settings.topics if t.topic not in existing]
    if missing:
        log.warning(
            "topics %s do not exist yet; they are consumed once Connect creates them", missing
        )
    gated = gated_sources(settings)
    gate = reader = None
    if gated:
        gate = TransactionGate()
        reader = TransactionTopicReader(
            gate, bootstrap=settings.bootstrap, topics=[transaction_topic(s) for s in sorted(gated)]
        )
        reader.start()

    def lake_factory(app_id: str) -> Lake:
        return Lake(
            settings.lake,
            app_id=app_id,
            storage_options=settings.storage_options,
            write_modes=settings.write_modes,  # type: ignore[arg-type]
        )

    created = ensure_topics(
        settings.bootstrap,
        dead_letters=dead_letter_topic(settings.pipeline),
        live=[live_topic(settings.live_prefix, t.table) for t in settings.topics]
        if settings.live_prefix
        else [],
    )
    outputs = KafkaOutputs(
        bootstrap=settings.bootstrap, pipeline=settings.pipeline, live_prefix=settings.live_prefix
    )
    if settings.live_prefix:
        seed_live_topics(settings, outputs, created)
    name = f"{socket.gethostname()}-{os.getpid()}"

    def beacon(state: dict[str, Any]) -> None:
        gate_state: dict[str, Any] = {"on": gate is not None}
        if gate is not None and reader is not None:
            gate_state.update(gate.state(), follows=reader.followed())
        write_beacon(settings.lake, name, {**state, "gate": gate_state}, settings.storage_options)

    app = build_app(
        settings,
        lake_factory=lake_factory,
        outputs=outputs,
        gate=gate,
        gated=gated,
        verify_gap=kafka_gap_verifier(settings.bootstrap),
        on_outcome=on_outcome,
        beacon=beacon,
    )
    try:
        faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    finally:
        if reader is not None:
            reader.stop()
        outputs.close()


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The pipeline config (YAML).",
)
@click.option(
    "--web-port",
    type=int,
    default=None,
    help="Serve Faust's web status on 127.0.0.1:PORT (off by default).",
)
@click.option(
    "--session-timeout",
    type=float,
    default=6.0,
    show_default=True,
    help="Consumer group session timeout in seconds: a killed worker's partitions move "
    "after this long (measured: a survivor commits 6 s after a kill at 6, 30 s at 30).",
)
@click.option(
    "--threads",
    type=int,
    default=4,
    show_default=True,
    help="Threads that decode and commit (one batch per topic at a time; topics in parallel).",
)
@click.option(
    "--stats",
    "stats_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write progress counters (JSON) to this file.",
)
@click.option(
    "--no-tx-gate", is_flag=True, help="Do not hold records for their transaction's END marker."
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Expose Prometheus metrics at http://127.0.0.1:PORT/metrics (off by default).",
)
@click.option(
    "--bucket-by",
    type=click.Choice(["partition", "key"]),
    default="partition",
    show_default=True,
    help="Layout of new live/forensic tables: buckets that follow the Kafka "
    "partition (workers never conflict) or key ranges (conflicts retried).",
)
@click.option(
    "--instance-id",
    default=None,
    help="Static group membership: a worker restarted with the same id within the session "
    "timeout gets its partitions back without a rebalance (ids unique per worker).",
)
def worker(
    config_path: str,
    web_port: int | None,
    session_timeout: float,
    threads: int,
    stats_path: str | None,
    no_tx_gate: bool,
    bucket_by: str,
    metrics_port: int | None,
    instance_id: str | None,
) -> None:
    """Run a Faust worker: Debezium topics -> milestoning -> Delta, exactly once."""
    from tidemark.config import load_config

    cfg = load_config(config_path, need_dsn=False)  # a worker never connects to a source
    if cfg.kafka is not None:
        check_epoch(cfg)
    settings = worker_settings(
        cfg,
        web_port=web_port,
        session_timeout_s=session_timeout,
        threads=threads,
        stats_path=Path(stats_path) if stats_path else None,
        gate_transactions=not no_tx_gate,
        partition_buckets=bucket_by == "partition",
        instance_id=instance_id,
    )
    on_outcome = None
    if metrics_port is not None:
        from tidemark.observe.metrics import WorkerMetrics, serve_metrics, status_registry
        from tidemark.observe.report import Observer

        registry = status_registry(Observer(cfg))
        metrics = WorkerMetrics(registry, cfg.pipeline, {t.topic: t.table for t in settings.topics})
        serve_metrics(registry, port=metrics_port)
        on_outcome = metrics.on_outcome
    level = logging.getLogger().getEffectiveLevel()
    run_worker(
        settings, loglevel="info" if level <= logging.INFO else "warn", on_outcome=on_outcome
    )

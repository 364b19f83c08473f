"""`tidemark run --config FILE`: the embedded pipeline, until SIGINT/SIGTERM."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from tidemark.config import PipelineConfig, load_config
from tidemark.health import HealthFile, health_path
from tidemark.loading import capture_keys, schedule_jobs
from tidemark.loadview import LoadView
from tidemark.lock import PipelineLock
from tidemark.pipeline import attach_gold, build_runner, open_lake, start_jvm_for
from tidemark.startup import SourceStart
from tidemark.state import state_dir
from tidemark.stream_processors.embedded.reports import BatchReport
from tidemark.stream_processors.embedded.runner import EmbeddedRunner
from tidemark.stream_processors.loading.schedule import Scheduler

logger = logging.getLogger(__name__)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the batch in flight is committed, then exit 0).

    Installed after the JVM started, so they replace the JVM's own handlers, which would
    halt the process without committing.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        logger.warning(
            "%s: committing the batch in flight, then stopping", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    # SIGUSR1 prints every thread's stack to stderr (a stuck pipeline says where it is)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def start_runner_metrics(
    config: PipelineConfig, *, port: int, host: str, stats: Callable[[], object] | None = None
) -> Callable[[BatchReport], None]:
    """Serve the runner's and the status's metrics; returns the runner's `on_batch`."""
    from tidemark.observe.metrics import RunnerMetrics, serve_metrics, status_registry
    from tidemark.observe.report import Observer

    registry = status_registry(Observer(config))
    metrics = RunnerMetrics(registry, config.pipeline, stats=stats)
    serve_metrics(registry, port=port, host=host)
    click.echo(f"metrics: http://{host}:{port}/metrics", err=True)
    return metrics.on_batch


def say_start(source: str, start: SourceStart) -> None:
    """What start-up reconciliation found, one line each (stderr)."""
    for reason in start.reasons:
        click.echo(f"source {source}: {reason}", err=True)


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pipeline config (YAML).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Expose Prometheus metrics at http://HOST:PORT/metrics (off by default).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics."
)
def run(config_path: Path, metrics_port: int | None, metrics_host: str) -> None:
    """Run the embedded pipeline: capture -> milestoning -> Delta, continuously.

    Tables new to the lake, or that start-up found it to miss, are loaded first by the
    parallel loader (progress shown, then a table of rows and status per table); reference
    tables are reloaded on their schedule and watermark-captured tables polled (docs/loading.md).
    Batches close at batching.max_events or batching.max_latency_ms and never split a source
    transaction; source offsets are acknowledged only after the lake commit. SIGINT/SIGTERM
    commit the batch in flight and exit 0; running it again resumes where the lake stopped:
    on every start, what capture resumes from is reconciled with the lake, and tables the
    lake misses are snapshotted again. A second run of the pipeline or lake is refused.
    With --metrics-port, Prometheus metrics (docs/observability.md) are served meanwhile.
    Schema changes are applied in order with the rows; it stops (exit 2) when a source
    lacks the DDL capture that `tidemark setup` installs.
    """
    config = load_config(config_path)
    state = state_dir()
    with PipelineLock(state, config.pipeline, config.lake):
        start_jvm_for(config, state)
        stop = threading.Event()
        install_stop_handlers(stop)

        on_batch = None
        built: list[EmbeddedRunner] = []
        if metrics_port is not None:
            on_batch = start_runner_metrics(
                config,
                port=metrics_port,
                host=metrics_host,
                stats=lambda: built[0].stats if built else None,
            )
        lake = open_lake(config)
        gold, on_batch = attach_gold(config, lake, on_batch)
        health = HealthFile(health_path(state, config.pipeline))
        health.report("running")
        with LoadView() as view:  # tables armed by the parallel loader first
            runner, lake = build_runner(
                config,
                state=state,
                lake=lake,
                on_batch=on_batch,
                on_health=health.report,
                require_ddl_capture=True,  # `tidemark setup` ran, or the source opted out
                on_start=say_start,
                stop=stop,
                load_progress=view.add,
                load_done=view.done,
            )
        built.append(runner)
        jobs, polled = schedule_jobs(config, capture_keys(config))
        scheduler = Scheduler(jobs) if jobs else None
        if scheduler is not None:  # reference refreshes, watermark polls
            scheduler.start()
        try:
            stats = runner.run(stop)
        finally:
            health.report("stopped")
            if scheduler is not None:
                scheduler.stop()
            if polled is not None:
                polled.close()
            if gold is not None:
                gold.close()
            lake.close()
    click.echo(
        f"stopped: {stats.batches} batches, {stats.events} events, "
        f"{stats.dead_letters} dead letters, {stats.retries} retries",
        err=True,
    )

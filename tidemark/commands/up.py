"""`tidemark up`: local Postgres + simulator + embedded pipeline, with live progress."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import click

from tidemark.commands.run import install_stop_handlers, say_start
from tidemark.config import PipelineConfig
from tidemark.kernel.errors import TidemarkError
from tidemark.lock import PipelineLock
from tidemark.pipeline import attach_gold, build_runner, open_lake, run_until, start_jvm_for
from tidemark.progress import ProgressState, plain_line, refresh_report, render
from tidemark.state import state_dir
from tidemark.up import (
    PIPELINE,
    Threads,
    UpOptions,
    bootstrap,
    start_page,
    wait_caught_up,
    wait_idle,
)


@click.command()
@click.option(
    "--profile",
    default="bank",
    show_default=True,
    type=click.Choice(["bank", "customers", "retail"]),
    help="Simulator schema.",
)
@click.option(
    "--lake",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Lake directory (default: lake; lake-distributed with --distributed).",
)
@click.option("--rate", default=500.0, show_default=True, help="Simulated changes per second.")
@click.option("--workers", default=2, show_default=True, help="Simulator connections.")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds (for scripts and CI); default: until Ctrl+C.",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    help="Port of the status page on 127.0.0.1 (a free one if it is taken).",
)
@click.option("--no-serve", is_flag=True, help="Do not start the status page.")
@click.option(
    "--distributed",
    is_flag=True,
    help="Run the distributed runtime instead: a broker, Kafka Connect with Debezium and "
    "`tidemark worker`s, natively on this machine.",
)
@click.option(
    "--worker-processes",
    default=2,
    show_default=True,
    help="With --distributed: how many `tidemark worker` processes share the partitions.",
)
@click.option(
    "--bootstrap",
    "bootstrap_servers",
    default=None,
    help="With --distributed: use this Kafka (host:port) instead of starting a local broker.",
)
def up(
    profile: str,
    lake: Path | None,
    rate: float,
    workers: int,
    duration: float | None,
    port: int,
    no_serve: bool,
    distributed: bool,
    worker_processes: int,
    bootstrap_servers: str | None,
) -> None:
    """Run the demo: local Postgres, the simulator and the pipeline into ./lake.

    The first run bootstraps everything (Postgres cluster, JVM check, schema); later runs
    resume where the lake stopped (a second `up` or `run` of the demo is refused). The
    status page (tables, freshness against the SLA, batches, dead letters, lineage,
    /metrics) runs beside it; its address is printed first.
    Ctrl+C stops the simulator, lets the pipeline commit what was written, and exits. Then
    try `tidemark verify`, `tidemark status` and
    `tidemark query "SELECT * FROM live.accounts LIMIT 5"`.
    """
    if distributed:
        _up_distributed(
            profile=profile,
            lake=lake or Path("lake-distributed"),
            rate=rate,
            sim_workers=workers,
            duration=duration,
            workers=worker_processes,
            bootstrap_servers=bootstrap_servers,
        )
        return
    lake = lake or Path("lake")
    options = UpOptions(profile=profile, lake=lake, rate=rate, workers=workers, duration=duration)
    with PipelineLock(state_dir(), PIPELINE, str(lake.absolute())):
        _demo(options, port=port, no_serve=no_serve)


def _demo(options: UpOptions, *, port: int, no_serve: bool) -> None:
    """The demo itself, while `up` holds the pipeline's lock."""
    from tidemark.simulator.runner import Simulator

    profile, workers, rate, duration = (
        options.profile,
        options.workers,
        options.rate,
        options.duration,
    )
    interactive = sys.stdout.isatty()
    click.echo(f"bootstrapping: local Postgres, `{profile}` schema, pipeline config...", err=True)
    config, url = bootstrap(options)
    state = state_dir()
    start_jvm_for(config, state)
    stop = threading.Event()
    install_stop_handlers(stop)
    progress = ProgressState()
    page = start_page(config, port=port, progress=progress) if not no_serve else None
    if page is not None:
        click.echo(f"status page: {page.url}  (tables, freshness, batches, lineage)", err=True)
        progress.page = page.url
    lake_facade = open_lake(config)
    gold, on_batch = attach_gold(config, lake_facade, page.on_batch if page else progress.on_batch)
    runner, lake_facade = build_runner(
        config, state=state, lake=lake_facade, on_batch=on_batch, on_start=say_start
    )
    if page is not None:
        page.runner = runner
    from tidemark.observe.report import Observer

    observer = page.observer if page is not None else Observer(config)

    pipeline_stop = threading.Event()
    simulator_stop = threading.Event()
    threads = Threads()
    threads.start("pipeline", run_until, runner, pipeline_stop)
    progress.phase = "capturing the initial state"
    click.echo("starting the pipeline (the first run snapshots the tables)...", err=True)
    wait_idle(runner, abort=stop)
    simulator = Simulator(url, profile=profile, workers=workers, rate=rate)
    threads.start("simulator", simulator.run, simulator_stop, on_progress=progress.on_simulator)
    progress.phase = "running"
    deadline = None if duration is None else time.monotonic() + duration

    def show() -> None:
        refresh_report(progress, lambda: observer.report(fresh=True))
        if not interactive:
            click.echo(plain_line(progress), err=True)

    from rich.live import Live

    live = Live(render(progress), refresh_per_second=2) if interactive else nullcontext()
    last_rows = 0.0
    try:
        with live:
            while not stop.is_set() and not threads.errors:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if not threads.alive("pipeline"):
                    break
                time.sleep(0.5)
                if time.monotonic() - last_rows >= (3 if interactive else 5):
                    show()
                    last_rows = time.monotonic()
                if interactive:
                    live.update(render(progress))  # type: ignore[union-attr]
            progress.phase = "stopping the simulator"
            simulator_stop.set()
            threads.join("simulator")
            progress.phase = "catching up"
            if not threads.errors:
                from tidemark.connectors.postgres.settings import replication_name

                slot = replication_name(config.pipeline, config.sources[0].name)
                caught = wait_caught_up(runner, url=url, slot=slot, timeout=options.drain_timeout)
                if not caught:
                    click.echo(
                        "the pipeline did not catch up in time; stopping anyway "
                        "(the next run resumes)",
                        err=True,
                    )
            progress.phase = "committing the batch in flight"
            pipeline_stop.set()
            threads.join("pipeline")
            show()
            if interactive:
                live.update(render(progress))  # type: ignore[union-attr]
        if gold is not None and not threads.errors:
            progress.phase = "refreshing the gold models"
            gold.wait_idle(timeout=options.drain_timeout)
    finally:
        pipeline_stop.set()
        simulator_stop.set()
        if gold is not None:
            gold.close()
        lake_facade.close()
        if page is not None:
            page.stop()
        observer.close()
    if threads.errors:
        error = threads.errors[0]
        if isinstance(error, TidemarkError):
            raise error
        raise RuntimeError("the demo failed; see the log above") from error
    if gold is not None:
        show_gold_sample(config)
    summary = threads.results.get("simulator")
    simulated = summary.total if summary is not None else progress.simulated
    click.echo(
        f"stopped: simulator wrote {simulated:,} changes; pipeline committed "
        f"{progress.events:,} events in {progress.batches:,} batches. "
        f"Next: `tidemark verify`, `tidemark status`, `tidemark serve`, `tidemark query`.",
        err=True,
    )


def show_gold_sample(config: PipelineConfig, rows: int = 5) -> None:
    """Print a few rows of the first gold model (the demo's Customer 360 for `bank`)."""
    from tidemark.gold import models_of
    from tidemark.query import connect, run_query
    from tidemark.render import format_result
    from tidemark.sinks.gold.status import read_status
    from tidemark.views import masking_for

    models, _ = models_of(config)
    if not models:
        return
    first = next((m for m in models if m.name == "customer_360"), models[0])
    status = read_status(config.lake, first.name, config.storage_options) or {}
    if status.get("status") != "ok":
        reason = (status.get("last_error") or {}).get("message") or status.get("status", "never")
        click.echo(f"gold.{first.name} is not ready: {reason}", err=True)
        return
    con = connect(config.lake, storage_options=config.storage_options, masking=masking_for(config))
    sample = run_query(
        con, f"SELECT * EXCLUDE (_tm_input_positions) FROM gold.{first.name} LIMIT {rows}"
    )
    width = shutil.get_terminal_size((100, 24)).columns
    click.echo(
        f"\ngold.{first.name}, a sample (`tidemark query` for more, `tidemark lineage` for "
        "where each column comes from):"
    )
    click.echo(format_result(sample, "table", width=width))


def _up_distributed(
    *,
    profile: str,
    lake: Path,
    rate: float,
    sim_workers: int,
    duration: float | None,
    workers: int,
    bootstrap_servers: str | None,
) -> None:
    from tidemark.stack.up import DistributedOptions, run

    stop = threading.Event()
    install_stop_handlers(stop)
    options = DistributedOptions(
        profile=profile,
        lake=lake,
        rate=rate,
        sim_workers=sim_workers,
        duration=duration,
        workers=workers,
        bootstrap=bootstrap_servers,
    )
    click.echo(run(options, stop=stop, interactive=sys.stdout.isatty()), err=True)

"""`tidemark run --config FILE`: the embedded pipeline, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from tidemark.config import load_config
from tidemark.pipeline import build_runner, start_jvm_for
from tidemark.state import state_dir

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


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pipeline config (YAML).",
)
def run(config_path: Path) -> None:
    """Run the embedded pipeline: capture -> milestoning -> Delta, continuously.

    Batches close at batching.max_events or batching.max_latency_ms and never split a source
    transaction; source offsets are acknowledged only after the lake commit. SIGINT/SIGTERM
    commit the batch in flight and exit 0; running it again resumes where it stopped.
    """
    config = load_config(config_path)
    state = state_dir()
    start_jvm_for(config, state)
    stop = threading.Event()
    install_stop_handlers(stop)

    runner, lake = build_runner(config, state=state)
    try:
        stats = runner.run(stop)
    finally:
        lake.close()
    click.echo(
        f"stopped: {stats.batches} batches, {stats.events} events, "
        f"{stats.dead_letters} dead letters, {stats.retries} retries",
        err=True,
    )

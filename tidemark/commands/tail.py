"""`tidemark tail --config FILE`: change events as JSON lines as they arrive (kcat for CDC)."""

from __future__ import annotations

import base64
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click
import orjson

from tidemark.config import load_config
from tidemark.connectors.debezium.engine import EmbeddedEngine
from tidemark.connectors.debezium.jvm import describe_java
from tidemark.connectors.debezium.tail import tail_events
from tidemark.connectors.postgres.capture import engine_dir
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.errors import ConfigError
from tidemark.pipeline import open_source_engine, source_keys
from tidemark.state import state_dir

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Pipeline YAML file.",
)
@click.option("--source", "source_name", default=None, help="Only this source (by name).")
@click.option("--max-events", type=int, default=None, help="Stop after N change events.")
@click.option(
    "--snapshot/--no-snapshot",
    default=False,
    help="Print the current rows first (op r), then stream.",
)
@click.option("--markers", is_flag=True, help="Also print transaction BEGIN/END markers.")
@click.option("--raw", is_flag=True, help="Print Debezium's envelope values, not decoded ones.")
@click.option(
    "--idle-timeout", type=float, default=None, help="Stop after this many seconds without events."
)
def tail(
    config_file: str,
    source_name: str | None,
    max_events: int | None,
    snapshot: bool,
    markers: bool,
    raw: bool,
    idle_timeout: float | None,
) -> None:
    """Print change events as JSON lines (op, table, key, position, tx, before, after).

    Uses its own temporary replication slot (the pipeline's offsets are never touched) and
    drops it on exit, so only changes made while it runs are shown (plus the current rows
    with --snapshot).
    """
    config = load_config(config_file)
    sources = [s for s in config.sources if source_name in (None, s.name)]
    if not sources:
        raise ConfigError(
            "sources",
            f"no source named `{source_name}`",
            hint=f"pick one of {[s.name for s in config.sources]}",
        )
    unsupported = [s.name for s in sources if s.kind != "postgres"]
    if unsupported:
        raise ConfigError(
            "sources",
            f"tail supports Postgres sources only for now, not `{unsupported[0]}`",
            hint="pass --source with a Postgres source",
        )
    pipeline = f"{config.pipeline}_tail"
    state = state_dir()
    engines: list[tuple[EmbeddedEngine, str, str]] = []
    try:
        for source in sources:
            slot = replication_name(pipeline, source.name)
            _forget(source.dsn, slot, state, pipeline, source.name)
            engine = open_source_engine(
                config,
                source,
                state=state,
                pipeline=pipeline,
                extra={"snapshot.mode": "initial" if snapshot else "no_data"},
                slot=slot,
                publication=replication_name(config.pipeline, source.name),
                signals=False,
                heartbeat_writes=False,
            )
            engines.append((engine, source.dsn, slot))
        _stop_on_signals()  # after the JVM started: its handlers would halt at once
        click.echo(f"tail: {len(engines)} source(s), {describe_java()}; Ctrl+C stops", err=True)
        out = sys.stdout.buffer
        keys = {table: k for source in sources for table, k in source_keys(source).items()}
        for event in tail_events(
            [e for e, _, _ in engines],
            key_columns=keys,
            raw=raw,
            markers=markers,
            max_events=max_events,
            idle_timeout=idle_timeout,
        ):
            out.write(orjson.dumps(event, default=_json_default) + b"\n")
            out.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # stopped (a signal, or the reader went away): clean up below
    finally:
        for engine, dsn, slot in engines:
            engine.close()
            _forget(dsn, slot, state, pipeline, engine.name)


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP stop tail like Ctrl+C, so its slot is dropped on the way out.

    Installed once the JVM runs: the JVM's own handlers would halt the process at once and
    leave the slot holding WAL.
    """

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in stops:  # one is enough: never interrupt the cleanup
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in stops:
        signal.signal(sig, stop)


def _json_default(value: object) -> object:
    """Decimals as exact strings, bytes as base64, anything else by str()."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def _forget(dsn: str, slot: str, state: Path, pipeline: str, source: str) -> None:
    """Drop tail's slot and offsets so no WAL is held once tail is gone."""
    for attempt in range(20):
        try:
            drop_slot(dsn, slot)
            break
        except Exception as exc:  # still active for a moment after close, or server gone
            if attempt == 19:
                log.warning("could not drop tail slot %s: %s", slot, exc)
            time.sleep(0.25)
    shutil.rmtree(engine_dir(state, pipeline, source), ignore_errors=True)

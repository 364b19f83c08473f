"""`tidemark status`: where each source and table stands, its freshness against its SLA.

The figures come from `tidemark/observe/` (the same code as the web page and `/api/status`):
`--json` prints exactly what `/api/status` returns. `--check` exits 1 when a layer is over
its freshness target, naming each one, for cron and alerting.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.health import health_path
from tidemark.observe.freshness import seconds_text
from tidemark.observe.model import PipelineReport, SourceReport
from tidemark.state import state_dir

if TYPE_CHECKING:
    from rich.console import Console

_COLOURS = {"green": "green", "amber": "yellow", "red": "red", "none": "dim"}


def _source_line(source: SourceReport) -> str:
    head = f"[bold]{source.source}[/bold] ({source.kind}, {source.runtime})"
    if source.error:
        return f"{head}  [red]source not reachable: {source.error}[/red]"
    slot = f"slot {source.slot}: {source.capture}" if source.slot else source.capture
    lag = (
        f"lag {source.lag_bytes:,} bytes, {seconds_text(source.lag_s)}"
        if source.lag_bytes is not None
        else f"lag {seconds_text(source.lag_s)}"
    )
    parts = [head, slot, lag]
    if source.latest_commit is not None:
        parts.append(f"newest commit {source.latest_commit:%Y-%m-%d %H:%M:%S}")
    if source.caught_up_at is not None:
        parts.append(f"caught up at {source.caught_up_at:%H:%M:%S}")
    if source.consistent_batch is not None:
        parts.append(f"consistent at batch {source.consistent_batch}")
    if source.splitting is not None:
        parts.append(f"[yellow]transaction {source.splitting} in parts beyond it[/yellow]")
    if source.connector is not None:
        parts.append(f"connector {source.connector.name}: {source.connector.state}")
    if source.connector is not None and source.connector.offsets.get("lsn"):
        from tidemark.connectors.postgres.snapshot import format_lsn

        parts.append(f"connect offset {format_lsn(int(source.connector.offsets['lsn']))}")
    if source.partitions:
        parts.append(f"consumer lag {sum(p.lag for p in source.partitions):,} records")
    return "  ".join(parts)


def _partition_lines(source: SourceReport) -> list[str]:
    """Per topic: each partition's end offset, the lake's offset and the lag."""
    topics: dict[str, list[str]] = {}
    for p in source.partitions:
        topics.setdefault(p.topic, []).append(
            f"p{p.partition} {p.lake_offset:,}/{p.end_offset:,}"
            + (f" [yellow]lag {p.lag:,}[/yellow]" if p.lag else "")
        )
    return [f"  {topic}: {'  '.join(parts)}" for topic, parts in topics.items()]


def _worker_lines(report: PipelineReport) -> list[str]:
    lines = []
    for w in report.workers:
        state = "running" if w.alive else f"[dim]gone ({seconds_text(w.age_s)} ago)[/dim]"
        head = f"worker {w.worker} ({state}): {len(w.partitions)} partitions, {w.events:,} events"
        gate = w.gate
        if gate is None or not gate.on:
            lines.append(f"{head}; transaction gate off")
            continue
        holding = ", ".join(f"{lane} {s:.0f}s" for lane, s in gate.holding.items()) or "nothing"
        lines.append(
            f"{head}; transaction gate follows {len(gate.follows)} topic(s), "
            f"{gate.markers:,} END markers, holding {holding}"
        )
    return lines


def render(report: PipelineReport, storage_options: Mapping[str, str] | None = None) -> None:
    """The report as rich tables, one per source, then the gold models."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    console.print(
        f"pipeline [bold]{report.pipeline}[/bold]  lake {report.lake}  "
        f"({report.seconds:.2f} s)  dead letters {report.dead_letters}"
    )
    for source in report.sources:
        console.print(_source_line(source))
        for line in _partition_lines(source):
            console.print(line)
        view = Table()
        for name in ("table", "state", "position", "committed", "rows", "freshness", "dead"):
            view.add_column(name, justify="right" if name in ("dead",) else "left")
        for t in source.tables:
            rows = " / ".join(
                f"{t.rows[k]:,}" for k in ("changelog", "live", "forensic") if k in t.rows
            )
            fresh = "  ".join(
                f"[{_COLOURS[layer.colour]}]{layer.layer} {seconds_text(layer.freshness_s)}"
                + (f" (sla {seconds_text(layer.sla_s)})" if layer.sla_s else "")
                + f"[/{_COLOURS[layer.colour]}]"
                for layer in t.layers
                if layer.layer != "changelog" or layer.sla_s
            )
            view.add_row(
                t.table,
                t.state,
                t.position_label or "-",
                t.committed_at.strftime("%Y-%m-%d %H:%M:%S") if t.committed_at else "-",
                rows or "-",
                fresh,
                str(t.dead_letters),
            )
        console.print(view)
        for t in source.tables:
            if t.refused:
                console.print(
                    f"[red]{t.table}: its events go to the dead letters:[/red] {t.refused}"
                )
            elif t.schema_change:
                console.print(
                    f"{t.table}: generation {t.generation}, last schema change {t.schema_change}"
                )
    if report.runner is not None:
        runner = report.runner
        detail = f": {runner.error}" if runner.state == "retrying" and runner.error else ""
        console.print(
            f"pipeline {runner.state} since {runner.since} ({runner.retries} retries so far)"
            f"{detail}"
        )
    for line in _worker_lines(report):
        console.print(line)
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
    _gold(console, report.lake, storage_options)


def _gold(console: Console, lake: str, storage_options: Mapping[str, str] | None) -> None:
    """The gold models' last refresh or failure (docs/consumers.md, model status files)."""
    from rich.table import Table

    from tidemark.sinks.gold.status import read_all

    models = read_all(lake, storage_options)
    if not models:
        return
    view = Table(title="gold models")
    for name in ("model", "status", "mode", "batch", "refreshed", "rows", "last error"):
        view.add_column(name)
    for model in models:
        last = model.get("last_refresh") or {}
        error = (model.get("last_error") or {}).get("message") or model.get("waiting_for") or ""
        view.add_row(
            model.get("model", "?"),
            model.get("status", "?"),
            last.get("mode", "-"),
            str(last.get("batch", "-")),
            str(last.get("at", "-"))[:19],
            str(last.get("rows_written", "-")),
            error[:80],
        )
    console.print(view)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print what /api/status returns.")
@click.option(
    "--connect-url",
    envvar="TIDEMARK_CONNECT_URL",
    default=None,
    help="Distributed: Kafka Connect's REST URL, for the connector's state and offsets "
    "(env TIDEMARK_CONNECT_URL).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when a layer's freshness is over its SLA (the `sla:` config key).",
)
def status(config_path: Path | None, as_json: bool, connect_url: str | None, check: bool) -> None:
    """Show each table's state, last position and time, rows, freshness and dead letters.

    Freshness of a layer is how far it trails its source: the source's newest commit time
    minus the newest time up to which the layer holds every change (0 when caught up;
    docs/observability.md). Green up to half the SLA, amber up to it, red above it. Per
    source: the replication slot's lag in bytes and seconds. Reads Delta log metadata and
    the source, never table data, and writes nothing.
    """
    from tidemark.observe.report import Observer

    config = resolve_config(config_path)
    observer = Observer(
        config, connect_url=connect_url, health=health_path(state_dir(), config.pipeline)
    )
    try:
        report = observer.report()
    finally:
        observer.close()
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        render(report, config.storage_options)
    if not check:
        return
    for breach in report.breaches:
        click.echo(
            f"SLA breached: {breach.table} {breach.layer} is {seconds_text(breach.freshness_s)}"
            f" behind (target {seconds_text(breach.sla_s)})",
            err=True,
        )
    if report.breaches:
        raise click.exceptions.Exit(1)  # found: a breach (tidemark/cli.py)
    click.echo("SLA: every layer within its target", err=True)

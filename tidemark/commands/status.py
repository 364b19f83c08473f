"""`tidemark status`: per table position, lag, rows per layer, dead letters."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.status import pipeline_status


def _short(position: str | None) -> str:
    """A Postgres position as its commit LSN (`0/19F4328`), else as it is."""
    if position is None:
        return "-"
    if len(position) == 40:
        from tidemark.connectors.postgres.snapshot import format_lsn

        return format_lsn(int(position[:16], 16))
    return position


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Show each table's last committed position and time, lag, rows per layer, dead letters.

    Lag is the replication slot's distance from the source's current WAL position (bytes)
    and the age of the newest change the lake holds while that distance is not zero.
    """
    config = resolve_config(config_path)
    sources = pipeline_status(config)
    if as_json:
        click.echo(json.dumps([asdict(s) for s in sources], default=str, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 140)
    for source in sources:
        lag = (
            f"{source.lag_bytes:,} bytes, {source.lag_seconds:.1f} s"
            if source.lag_bytes is not None and source.lag_seconds is not None
            else (source.error or "unknown")
        )
        state = {True: "active", False: "inactive", None: "-"}[source.slot_active]
        console.print(f"[bold]{source.source}[/bold]  slot {source.slot} ({state})  lag: {lag}")
        view = Table()
        for name in ("table", "position", "committed", "changelog", "live", "forensic", "dead"):
            view.add_column(name, justify="right" if name not in ("table", "position") else "left")
        for t in source.tables:
            view.add_row(
                t.table,
                _short(t.position),
                t.committed_at.strftime("%Y-%m-%d %H:%M:%S") if t.committed_at else "-",
                *(
                    f"{t.rows[layer]:,}" if layer in t.rows else "-"
                    for layer in ("changelog", "live", "forensic")
                ),
                str(t.dead_letters),
            )
        console.print(view)

"""`tidemark resync`: snapshot chosen tables again while streaming goes on (logic in
tidemark/resync.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.config import PipelineConfig
from tidemark.resync import Progress, Request, request_resync, watch
from tidemark.state import state_dir

if TYPE_CHECKING:
    from rich.progress import TaskID


@click.command()
@config_option
@click.option(
    "--table",
    "tables",
    multiple=True,
    help="A table to snapshot again (schema.table or source.schema.table); repeatable. "
    "Default: every table.",
)
@click.option("--source", "source", default=None, help="Only this source's tables.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Show progress until the snapshot is in the lake (while a pipeline runs).",
)
def resync(
    config_path: Path | None, tables: tuple[str, ...], source: str | None, wait: bool
) -> None:
    """Snapshot tables again, reconciled with the lake, while streaming goes on.

    Unchanged rows add nothing, changed rows get one new version, rows that vanished at the
    source are deleted from live and closed in forensic. A running pipeline does it at once
    (progress shown; Ctrl+C stops only the watching); otherwise the next `tidemark run` (or
    `up`) does it as it starts. Safe to interrupt and to run again. For a source that is now
    another database than the lake was built from (run refuses it), resync adopts the new
    one: the next start snapshots all of its tables into the lake, history kept.
    """
    config = resolve_config(config_path)
    requests = request_resync(config, state=state_dir(), tables=tables, source=source)
    for request in requests:
        _describe(request)
    running = [r for r in requests if r.running is not None and not r.adopted]
    if not wait or not running:
        return
    done = _follow(config, running)
    if not done:  # Ctrl+C stopped the watching (the snapshot goes on): an interrupt
        raise click.exceptions.Exit(2)


def _describe(request: Request) -> None:
    if request.adopted:
        click.echo(
            f"source {request.source}: adopted its new database; the next `tidemark run` "
            f"snapshots its {len(request.tables)} table(s) into the lake (history kept)",
            err=True,
        )
        return
    for table, snapshot in request.watching.items():
        click.echo(f"{table}: a snapshot is already under way ({snapshot}): watching it", err=True)
    if request.tables:
        when = "now" if request.running else "when the pipeline next starts"
        click.echo(
            f"{', '.join(request.tables)}: snapshot {request.signal} requested; it runs {when}",
            err=True,
        )


def _follow(config: PipelineConfig, requests: list[Request]) -> bool:
    """Progress bars (rich) per table until done; Ctrl+C stops watching, not the snapshot."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    estimates = {t: n for r in requests for t, n in r.estimates.items()}
    bars = Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(),
        transient=False,
    )
    ids: dict[str, TaskID] = {}
    rows: dict[str, int] = {}

    def show(state: list[Progress]) -> None:
        for item in state:
            if item.table not in ids:
                ids[item.table] = bars.add_task(item.table, total=estimates.get(item.table) or None)
            rows[item.table] = max(rows.get(item.table, 0), item.rows)
            total = estimates.get(item.table) or None
            if item.done:  # the estimate was the planner's: the count is what came
                total = rows[item.table] or total or 1
                bars.update(ids[item.table], completed=total, total=total)
            else:
                bars.update(ids[item.table], completed=rows[item.table], total=total)

    try:
        with bars:
            done = watch(config, requests, on_progress=show, stop=lambda: False)
    except KeyboardInterrupt:
        click.echo(
            "stopped watching; the snapshot goes on in the running pipeline "
            "(`tidemark resync` again shows it)",
            err=True,
        )
        return False
    click.echo("resync: done", err=True)
    return done

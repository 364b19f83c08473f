"""`tidemark query "SQL"`: DuckDB over the lake (logic in tidemark/query.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.query import connect, run_query
from tidemark.render import OutputFormat, format_result
from tidemark.sinks.views.masking import Masking


@click.command()
@click.argument("sql")
@config_option
@click.option("--lake", default=None, help="Lake root (overrides the config's).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "records", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output: a table folded to the terminal's width (columns that do not fit are named "
    "below it), one record per block, CSV with a header, or JSON lines.",
)
@click.option(
    "--latest",
    is_flag=True,
    help="Read every committed row, ignoring the lake's consistent cut (may show part of a "
    "source transaction still being committed).",
)
def query(
    sql: str, config_path: Path | None, lake: str | None, fmt: OutputFormat, latest: bool
) -> None:
    """Run SQL over the lake with DuckDB.

    Views: live."<source>.<schema>.<table>" (also live.<table> when unique), likewise
    changelog.*, forensic.* and gold.*; `as_of('<table>', TIMESTAMP '2026-01-01 12:00')`
    gives the table as it was at that instant, `changes_between('<table>', t1, t2)` the
    changes in between. Every view reads the lake at its consistent cut: whole source
    transactions, the same cut in every table. Classified columns are masked as in
    `tidemark views`. Example:

        tidemark query "SELECT count(*) FROM live.accounts"
    """
    storage: dict[str, str] = {}
    masking = Masking()
    if lake is None:
        from tidemark.views import masking_for

        config = resolve_config(config_path)
        lake, storage, masking = config.lake, dict(config.storage_options), masking_for(config)
    result = run_query(connect(lake, storage_options=storage, masking=masking, latest=latest), sql)
    width = shutil.get_terminal_size((100, 24)).columns
    click.echo(format_result(result, fmt, width=width))
    if fmt in ("table", "records"):
        click.echo(f"({result.num_rows} rows)", err=True)

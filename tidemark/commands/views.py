"""`tidemark views --duckdb FILE`: a DuckDB database of consumer views (tidemark/views.py)."""

from __future__ import annotations

from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.views import write_views


@click.command()
@config_option
@click.option(
    "--duckdb",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The DuckDB database file to create or reconcile.",
)
def views(config_path: Path | None, path: Path) -> None:
    """Write a DuckDB database of views over the lake, for any DuckDB client.

    One view per table and layer, as in `tidemark query` (live.customers,
    forensic."bank.public.accounts", gold.customer_360), plus the macros
    as_of(table, ts) and changes_between(table, t1, t2). The views read the Delta tables
    through DuckDB's delta extension, so they stay current; run again after a schema change
    to reconcile them. Classified columns are masked. Example:

        tidemark views --duckdb consumer.duckdb
        duckdb consumer.duckdb -c "SELECT * FROM live.customers LIMIT 5"
    """
    config = resolve_config(config_path)
    report = write_views(config, path)
    masked = sorted({f"{v.table.name}.{c}" for v in report.views for c in v.masked})
    nulls = sorted({f"{v.schema}.{v.name}.{c}" for v in report.views for c in v.kept_as_null})
    click.echo(f"{path}: {len(report.views)} views", err=True)
    if masked:
        click.echo(f"masked columns: {', '.join(masked)}", err=True)
    if nulls:
        click.echo(f"columns gone from the lake, kept as NULL: {', '.join(nulls)}", err=True)
    if report.dropped:
        click.echo(
            f"views of tables gone from the lake, dropped: {', '.join(report.dropped)}", err=True
        )

"""`tidemark query "SQL"`: DuckDB over the lake (logic in tidemark/query.py)."""

from __future__ import annotations

from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.query import OutputFormat, connect, format_result, run_query


@click.command()
@click.argument("sql")
@config_option
@click.option("--lake", default=None, help="Lake root (overrides the config's).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output: a table, CSV with a header, or JSON lines.",
)
def query(sql: str, config_path: Path | None, lake: str | None, fmt: OutputFormat) -> None:
    """Run SQL over the lake with DuckDB.

    Views: live."<source>.<schema>.<table>" (also live.<table> when unique), likewise
    changelog.* and forensic.*; `as_of('<table>', TIMESTAMP '2026-01-01 12:00')` gives the
    table as it was at that instant. Example:

        tidemark query "SELECT count(*) FROM live.accounts"
    """
    storage: dict[str, str] = {}
    if lake is None:
        config = resolve_config(config_path)
        lake, storage = config.lake, dict(config.storage_options)
    result = run_query(connect(lake, storage_options=storage), sql)
    if fmt != "table":
        click.echo(format_result(result, fmt))
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(show_lines=False)
    for name in result.column_names:
        view.add_column(name)
    for row in result.to_pylist():
        view.add_row(*("NULL" if v is None else str(v) for v in row.values()))
    Console().print(view)
    click.echo(f"({result.num_rows} rows)", err=True)

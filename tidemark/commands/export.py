"""`tidemark export --sample N --out DIR`: sample rows of the lake as JSON (tidemark/export.py)."""

from __future__ import annotations

from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config


@click.command()
@click.option(
    "--sample", "rows", type=click.IntRange(min=1), required=True, help="Rows per table and layer."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write <layer>/<table>.json into (created if missing).",
)
@config_option
@click.option("--lake", default=None, help="Lake root (overrides the config's).")
@click.option("--table", "tables", multiple=True, help="Only this lake table (repeatable).")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    type=click.Choice(["changelog", "live", "forensic", "gold"]),
    help="Only this layer (repeatable).",
)
def export(
    rows: int,
    out: Path,
    config_path: Path | None,
    lake: str | None,
    tables: tuple[str, ...],
    layers: tuple[str, ...],
) -> None:
    """Write N rows of every table and layer as indented JSON files (an API design aid).

    Files are OUT/<layer>/<table>.json, each an array of objects. Decimals are strings with
    their exact digits, timestamps ISO 8601, binary hex, float NaN/Infinity strings;
    classified columns are masked as in `tidemark query`. Example:

        tidemark export --sample 5 --out samples
    """
    from tidemark.export import export_sample
    from tidemark.sinks.views.masking import Masking

    storage: dict[str, str] = {}
    masking = Masking()
    if lake is None:
        from tidemark.views import masking_for

        config = resolve_config(config_path)
        lake, storage, masking = config.lake, dict(config.storage_options), masking_for(config)
    written = export_sample(
        lake, out, rows=rows, storage_options=storage, masking=masking, tables=tables, layers=layers
    )
    for item in written:
        click.echo(f"{item.path}  ({item.rows} rows)")
    click.echo(f"{len(written)} files written under {out}", err=True)

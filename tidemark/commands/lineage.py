"""`tidemark lineage [MODEL]`: column lineage of the gold models (tidemark/gold.py)."""

from __future__ import annotations

from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.gold import lineage_text


@click.command()
@click.argument("model", required=False)
@config_option
def lineage(model: str | None, config_path: Path | None) -> None:
    """Show where each column of a gold model comes from, as a tree.

    For every output column: the expression that computes it and the lake columns it reads
    (view and column), with classified (masked) columns marked. Without MODEL, every model.
    Example:

        tidemark lineage customer_360
    """
    click.echo(lineage_text(resolve_config(config_path), model))

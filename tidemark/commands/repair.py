"""`tidemark repair`: restore lake tables with a damaged Delta log to their last good version."""

from __future__ import annotations

from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.repair import apply, inspect


@click.command()
@config_option
@click.option("--lake", default=None, help="Lake root (overrides the config's).")
@click.option("--dry-run", is_flag=True, help="Only report what is damaged and the plan.")
@click.option("--yes", "-y", is_flag=True, help="Repair without asking.")
def repair(config_path: Path | None, lake: str | None, dry_run: bool, yes: bool) -> None:
    """Find lake tables whose Delta log cannot be read and restore each to its last good version.

    The log files after that version are moved to <lake>/_tidemark/repair/<time>/ (nothing is
    deleted). Stop the pipeline first. The changes of the commits set aside must be captured
    again: the report names each table and the command. Exit 0 when nothing is damaged or
    everything was repaired, 1 when damage was found but not repaired (--dry-run, or no).
    """
    root = lake or resolve_config(config_path).lake
    damages = inspect(root)
    if not damages:
        click.echo(f"no damaged table under {root}")
        return
    for damage in damages:
        click.echo(f"damaged: {damage.name}: {damage.error}")
        click.echo(
            f"  plan: back to version {damage.good_version}, setting aside "
            f"{', '.join(damage.set_aside) or 'nothing'}; {damage.lost}"
        )
    if dry_run or not (yes or click.confirm("Repair these tables?", default=False, err=True)):
        raise click.exceptions.Exit(1)  # found: damage not repaired (tidemark/cli.py)
    backup = apply(root, damages)
    click.echo(f"repaired {len(damages)} table(s); the files set aside are in {backup}")

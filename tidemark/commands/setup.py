"""`tidemark setup --config FILE`: show, then apply, what the sources need (DDL capture...)."""

from __future__ import annotations

from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.kernel.secrets import mask
from tidemark.source_setup import apply, plan


@click.command()
@config_option
@click.option(
    "--admin-dsn",
    default=None,
    help="Connect as this role (a superuser: event triggers need one) instead of the "
    "source's own; rights are still granted to the source's role.",
)
@click.option("--dry-run", is_flag=True, help="Only print the statements.")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
def setup(config_path: Path | None, admin_dsn: str | None, dry_run: bool, yes: bool) -> None:
    """Print what each Postgres source needs, then apply it once you agree.

    Tidemark's DDL capture (schema `_tidemark`: event triggers that put every schema change
    in the change stream, in order with the rows), the capture role's rights, the signal
    table, the publication (partitions published as their parent) and the captured-table
    list. Idempotent: run it again after changing the tables of a source.
    """
    config = resolve_config(config_path)
    plans = plan(config, admin_dsn=admin_dsn)
    for source_plan in plans:
        click.echo(f"-- source `{source_plan.source}` at {mask(source_plan.dsn)}")
        for statement in source_plan.statements:
            needs = " (superuser)" if statement.superuser else ""
            click.echo(f"-- {statement.purpose}{needs}")
            click.echo(statement.sql.strip() + "\n")
    if dry_run:
        return
    if not yes and not click.confirm("Apply these statements?", default=False, err=True):
        click.echo("nothing applied", err=True)
        return
    apply(plans)
    click.echo(f"applied to {len(plans)} source(s)", err=True)

"""`tidemark db start|stop|status|url`: the local PostgreSQL cluster."""

from __future__ import annotations

import click

from tidemark.connectors.postgres.cluster import LocalCluster
from tidemark.kernel.secrets import mask
from tidemark.state import postgres_dir


@click.group()
def db() -> None:
    """The local PostgreSQL cluster (wal_level=logical) under the state directory."""


@db.command()
def start() -> None:
    """Initialize on first use and start the cluster on a free loopback port."""
    cluster = LocalCluster(postgres_dir())
    url = cluster.start()
    click.echo(f"running: {mask(url)}  (data: {cluster.data_dir})")


@db.command()
def stop() -> None:
    """Stop the cluster (fast shutdown)."""
    stopped = LocalCluster(postgres_dir()).stop()
    click.echo("stopped" if stopped else "not running")


@db.command()
def status() -> None:
    """Say whether the cluster is initialized and running, and on which port."""
    state = LocalCluster(postgres_dir()).status()
    if not state.initialized:
        click.echo("not initialized (run `tidemark db start`)")
        raise click.exceptions.Exit(1)  # found: not running
    click.echo(
        f"{'running' if state.running else 'stopped'} on 127.0.0.1:{state.port}"
        f"  (data: {state.data_dir})"
    )
    if not state.running:
        raise click.exceptions.Exit(1)  # found: not running


@db.command()
@click.option("--reveal", is_flag=True, help="Print the password too (for scripts: $(...)).")
def url(reveal: bool) -> None:
    """Print the connection URL (password masked unless --reveal)."""
    value = LocalCluster(postgres_dir()).url()
    click.echo(value if reveal else mask(value))

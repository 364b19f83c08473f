"""The `tidemark` command: a thin layer over the library (STYLE §7).

A `TidemarkError` becomes one line plus a hint and a non-zero exit; anything else
keeps its traceback, because it is a bug.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from tidemark.kernel.errors import TidemarkError
from tidemark.kernel.secrets import mask

# name -> "module:attribute"; imported lazily so `tidemark --help` stays fast.
# Each command lives in its own module under tidemark/commands/.
COMMANDS: dict[str, str] = {
    "connectors": "tidemark.commands.connectors:connectors",
    "db": "tidemark.commands.db:db",
    "lineage": "tidemark.commands.lineage:lineage",
    "query": "tidemark.commands.query:query",
    "repair": "tidemark.commands.repair:repair",
    "resync": "tidemark.commands.resync:resync",
    "run": "tidemark.commands.run:run",
    "serve": "tidemark.commands.serve:serve",
    "setup": "tidemark.commands.setup:setup",
    "simulate": "tidemark.commands.simulate:simulate",
    "status": "tidemark.commands.status:status",
    "tail": "tidemark.commands.tail:tail",
    "up": "tidemark.commands.up:up",
    "verify": "tidemark.commands.verify:verify",
    "views": "tidemark.commands.views:views",
    "worker": "tidemark.commands.worker:worker",
}


class LazyGroup(click.Group):
    """A click group that imports each command only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Tidemark: change data capture into Delta Lake (live and forensic tables)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI and turn Tidemark errors into one clear line."""
    try:
        return cli.main(args=argv, standalone_mode=False)
    except TidemarkError as exc:
        click.secho(f"error: {mask(exc.message)}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {mask(exc.hint)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)

"""The `tidemark` command: a thin layer over the library (STYLE §7).

Exit codes are exact, for scripts and cron jobs (README, "Exit codes"):
- 0: the command did its work;
- 1: a check found something: `verify` a difference, `connectors status` a connector not
  RUNNING, `db status` a cluster not running (commands say so by `click.exceptions.Exit(1)`);
- 2: it could not do its work: a usage or environment error (a `TidemarkError`: one line
  plus a hint), an interrupt, output that could not be written, or an unexpected error (a
  bug: its traceback is printed). Never 1, so that 1 always means "found".
Every run leaves through `exit_now`, which skips the interpreter's teardown of native
threads (see there).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any, NoReturn

import click

from tidemark.kernel.errors import TidemarkError
from tidemark.kernel.secrets import mask

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2

# name -> "module:attribute"; imported lazily so `tidemark --help` stays fast.
# Each command lives in its own module under tidemark/commands/.
COMMANDS: dict[str, str] = {
    "connectors": "tidemark.commands.connectors:connectors",
    "db": "tidemark.commands.db:db",
    "export": "tidemark.commands.export:export",
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


def run_cli(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (0, 1 or 2; see the module docstring)."""
    try:
        result: Any = cli.main(args=argv, standalone_mode=False)
    except TidemarkError as exc:
        click.secho(f"error: {mask(exc.message)}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {mask(exc.hint)}", err=True)
        return exc.exit_code if exc.exit_code in (EXIT_FOUND, EXIT_ERROR) else EXIT_ERROR
    except click.exceptions.Abort:  # Ctrl+C (or end of input at a prompt)
        click.echo("interrupted", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:  # a usage error: bad option, missing file, ...
        exc.show()
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_ERROR
    except SystemExit as exc:  # a library's exit (click on a closed pipe, Faust): not a finding
        return EXIT_OK if exc.code in (None, 0) else EXIT_ERROR
    except Exception:  # a bug: keep its traceback, and never let it read as "found"
        traceback.print_exc()
        click.echo("error: unexpected failure (a bug; the traceback is above)", err=True)
        return EXIT_ERROR
    if result is None:
        return EXIT_OK
    return result if result in (EXIT_OK, EXIT_FOUND, EXIT_ERROR) else EXIT_ERROR


def exit_now(code: int) -> NoReturn:
    """Flush what the command wrote, then leave the process without interpreter teardown.

    Why: Arrow's and delta-rs's native worker threads are torn down while the interpreter
    exits, and now and then that aborts a process whose work was done ("terminate called
    without an active exception", exit 134, about 1 run in 25 of a plain script reading a
    Delta table here; delta-rs issue #2184, apache/arrow#34314). Every command has finished
    or joined its own work when it returns (the runner commits and closes its engines, the
    lake shuts its pools), so the teardown has nothing left to do but the risky part:
    `os._exit` skips it, and the exit code is the command's, every time.
    """
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # the reader went away: the output is incomplete
        code = EXIT_ERROR if code == EXIT_OK else code
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    logging.shutdown()
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point (`tidemark`, `python -m tidemark`): run the command, exit with its code."""
    exit_now(run_cli(argv))

"""Every command has help text and a row in README (STYLE §7)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tidemark.cli import COMMANDS, cli

README = (Path(__file__).parent.parent / "README.md").read_text()


def _walk(command: click.Command, path: tuple[str, ...]):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from _walk(command.get_command(ctx, name), (*path, name))


def test_every_registered_command_exists():
    ctx = click.Context(cli)
    assert sorted(cli.list_commands(ctx)) == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_help_and_is_in_readme(name):
    command = cli.get_command(click.Context(cli), name)
    for path, sub in _walk(command, (name,)):
        assert (sub.help or "").strip(), f"`tidemark {' '.join(path)}` has no help text"
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
    assert f"`tidemark {name}" in README, f"README does not mention `tidemark {name}`"

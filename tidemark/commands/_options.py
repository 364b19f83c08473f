"""Options shared by the commands that read a pipeline: `--config` or the `up` demo's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tidemark.config import PipelineConfig, load_config
from tidemark.kernel.errors import UsageError
from tidemark.state import state_dir

F = TypeVar("F", bound=Callable[..., Any])


def demo_config_path() -> Path:
    """Where `tidemark up` writes the config it generates for the local cluster."""
    return state_dir() / "up" / "pipeline.yaml"


def config_option(func: F) -> F:
    """`--config FILE`; without it the commands use the config `tidemark up` generated."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Pipeline config (YAML). Default: the one `tidemark up` generated.",
    )(func)


def resolve_config(config_path: Path | None) -> PipelineConfig:
    """The given config, else the demo's; a clear error when there is neither.

    Raises:
        UsageError: no --config and no `tidemark up` state in this directory.
    """
    if config_path is not None:
        return load_config(config_path)
    demo = demo_config_path()
    if demo.exists():
        return load_config(demo)
    raise UsageError(
        "no pipeline config given and no `tidemark up` state here",
        hint="pass --config FILE, or run `tidemark up` first",
    )

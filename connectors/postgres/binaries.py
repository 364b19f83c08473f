"""Find PostgreSQL server binaries: an explicit override, PATH, or Debian's layout."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tidemark.connectors.errors import SourceConfigError

_TOOLS = ("initdb", "pg_ctl", "postgres")
MIN_MAJOR = 14


def _major(bin_dir: Path) -> int:
    """Major version from Debian's path (/usr/lib/postgresql/15/bin) or 0 if unknown."""
    match = re.search(r"/(\d+)/bin/?$", str(bin_dir))
    return int(match.group(1)) if match else 0


def _candidates() -> list[Path]:
    dirs: list[Path] = []
    if override := os.environ.get("TIDEMARK_PG_BIN"):
        dirs.append(Path(override))
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    dirs.extend(debian)
    return dirs


def find_postgres_bin() -> Path:
    """Return the directory holding initdb, pg_ctl and postgres (version >= 14).

    Raises:
        SourceConfigError: no usable installation; the hint says how to get one.
    """
    for directory in _candidates():
        if all((directory / tool).exists() for tool in _TOOLS):
            major = _major(directory)
            if major and major < MIN_MAJOR:
                continue
            return directory
    raise SourceConfigError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres >= 14) were not found",
        hint="run `make bootstrap` (installs Debian's postgresql as root), "
        "`apt-get install postgresql`, or set TIDEMARK_PG_BIN to the bin directory",
    )

"""`tidemark repair`: bring a lake table with a damaged Delta log back to its last good version.

A commit file cut short (a full disk, a copy interrupted) makes the whole table unreadable:
every reader stops at it. Repair finds the newest version that still loads, moves the log
files after it (commits and checkpoints) into `<lake>/_tidemark/repair/<when>/`, so nothing
is deleted, and checks the table opens again. The changes of the commits set aside are no
longer in that table: the report names the table to capture again (`tidemark resync`).
Local lakes only: on an object store the same files are moved by hand (docs/sinks.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from tidemark.kernel.errors import UsageError
from tidemark.kernel.names import from_path_segment
from tidemark.sinks.delta.table import open_table
from tidemark.sinks.errors import SinkLogDamaged
from tidemark.sinks.readers import has_deletion_vectors

logger = logging.getLogger(__name__)

_VERSIONED = re.compile(r"^(\d{20})\.(json|checkpoint\.parquet|checkpoint\.\d+\.\d+\.parquet)$")


@dataclass(frozen=True)
class Damage:
    """One damaged table and what repair does about it.

    Attributes:
        path: the table's directory.
        name: the table as the lake names it (`live/src.public.t`, `_tidemark/batches`).
        good_version: the newest version that loads (None: none does; repair cannot help).
        set_aside: log files after it, moved away by `apply`.
        error: why it does not open.
    """

    path: Path
    name: str
    good_version: int | None
    set_aside: tuple[str, ...]
    error: str

    @property
    def lost(self) -> str:
        """What the table no longer holds after the repair, and what to do about it."""
        if self.good_version is None:
            return "no version of it loads; move it aside and capture the table again"
        layer, _, folder = self.name.partition("/")
        table = from_path_segment(folder)
        if layer in ("changelog", "live", "forensic"):
            return (
                f"its commits after version {self.good_version} are set aside: capture "
                f"`{table}` again with `tidemark resync --table {table.split('.', 1)[-1]}`"
            )
        return f"its commits after version {self.good_version} are set aside"


def _tables(root: Path) -> list[Path]:
    found = []
    for folder in ("changelog", "live", "forensic", "gold", "_tidemark"):
        base = root / folder
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if (p / "_delta_log").is_dir())
    return found


def _loads(path: Path, version: int | None = None) -> bool:
    try:
        table = DeltaTable(str(path), version=version)
        table.file_uris()  # the log replays
        if has_deletion_vectors(table):
            pa.table(table.deletion_vectors())  # and every DV file is there and sound
    except Exception:  # any failure: this version does not load
        return False
    return True


def _checkpoint_version(log: Path) -> int:
    """The version `_last_checkpoint` points at (-1 when there is none or it is unreadable)."""
    try:
        return int(json.loads((log / "_last_checkpoint").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def inspect(root: str) -> list[Damage]:
    """The lake's tables whose log does not load, each with its last good version."""
    if "://" in root:
        raise UsageError(
            f"`tidemark repair` works on local lakes; `{root}` is an object store",
            hint="move the damaged `_delta_log/<version>.json` (and later ones) aside by hand",
        )
    base = Path(root).absolute()
    damaged = []
    for path in _tables(base):
        try:
            open_table(str(path))
            continue
        except SinkLogDamaged as exc:
            error = exc.message
        log = path / "_delta_log"
        versions = sorted({int(m.group(1)) for n in os.listdir(log) if (m := _VERSIONED.match(n))})
        good = next((v for v in reversed(versions) if _loads(path, v)), None)
        later = [
            n
            for n in os.listdir(log)
            if (m := _VERSIONED.match(n)) and good is not None and int(m.group(1)) > good
        ]
        if good is not None and _checkpoint_version(log) > good:
            later.append("_last_checkpoint")
        aside = tuple(sorted(later))
        name = str(path.relative_to(base))
        damaged.append(Damage(path, name, good, aside, error))
    return damaged


def apply(root: str, damages: list[Damage]) -> Path:
    """Move each damaged table's later log files aside; returns where they went.

    Raises:
        UsageError: a table has no version that loads, or still does not load after.
    """
    backup = (
        Path(root).absolute()
        / "_tidemark"
        / "repair"
        / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    )
    for damage in damages:
        if damage.good_version is None:
            raise UsageError(f"`{damage.name}`: no version of its log loads", hint=damage.lost)
        target = backup / damage.name / "_delta_log"
        target.mkdir(parents=True, exist_ok=True)
        for name in damage.set_aside:
            shutil.move(str(damage.path / "_delta_log" / name), str(target / name))
        if not _loads(damage.path):
            raise UsageError(
                f"`{damage.name}` still does not load after setting aside {damage.set_aside}",
                hint=f"the files are in {target}; inspect the table's log by hand",
            )
        logger.warning("repaired %s: back at version %s", damage.name, damage.good_version)
    return backup

"""Debezium's offsets file, read and written as whole entries: what an engine resumes from.

The embedded engine keeps its offsets in a Kafka `FileOffsetBackingStore` file (a Java
serialized map of byte strings: key `[engine name, source partition]`, value the offset, both
schemaless JSON). Tidemark records those entries in the lake with every batch and, on start,
writes the lake's entries back into this file (`tidemark/startup.py`): the lake, not the state
directory, says where capture resumes. Entries are kept as the text Kafka wrote, never rebuilt,
so the key bytes Debezium looks up stay exact. Needs the JVM (`start_jvm`), which the engine
starts anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

OFFSETS_FILE = "offsets.dat"
KEPT_FILE = "offsets.acknowledged"  # the engine's whole copy, restored over offsets.dat on start

Offsets = dict[str, str]
"""Offset file entries: key text -> value text (JSON)."""


def _bridge() -> object:
    import jpype

    return jpype.JClass("tidemark.bridge.EngineBridge")


def read_offsets(directory: Path) -> Offsets | None:
    """The entries an engine in `directory` would resume from (None when it has none).

    The engine's kept copy (`offsets.acknowledged`) wins over `offsets.dat`, as on start.
    """
    for name in (KEPT_FILE, OFFSETS_FILE):
        path = Path(directory) / name
        if path.exists() and path.stat().st_size:
            text = _bridge().readOffsetFile(str(path))  # type: ignore[attr-defined]
            if text is not None:
                entries = json.loads(str(text))
                if entries:
                    return {str(k): str(v) for k, v in entries.items() if v is not None}
    return None


def write_offsets(directory: Path, offsets: Mapping[str, str]) -> None:
    """Make `directory`'s engine resume from exactly `offsets` (both files, atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(offsets))
    for name in (OFFSETS_FILE, KEPT_FILE):
        _bridge().writeOffsetFile(str(directory / name), text)  # type: ignore[attr-defined]
    log.info("offsets in %s set from the lake", directory)


def clear_offsets(directory: Path) -> bool:
    """Remove an engine's offsets (it starts from nothing: Debezium snapshots); True if any."""
    removed = False
    for name in (OFFSETS_FILE, KEPT_FILE, f"{KEPT_FILE}.partial", "tables.json"):
        path = Path(directory) / name
        if path.exists():
            path.unlink()
            removed = True
    return removed


def offset_values(offsets: Mapping[str, str] | None) -> dict[str, object]:
    """The offset maps of every entry merged into one (an engine has one source partition)."""
    merged: dict[str, object] = {}
    for value in (offsets or {}).values():
        parsed = json.loads(value)
        if isinstance(parsed, dict):
            merged.update(parsed)
    return merged


def offsets_lsn(offsets: Mapping[str, str] | None) -> int | None:
    """The highest LSN a Debezium Postgres offset names (`lsn`, `lsn_commit`, `lsn_proc`):
    every transaction that committed before it was delivered before the offset's record, and
    the slot never confirms beyond it."""
    values = offset_values(offsets)
    lsns = [
        int(str(v)) for k in ("lsn", "lsn_commit", "lsn_proc") if (v := values.get(k)) is not None
    ]
    return max(lsns) if lsns else None

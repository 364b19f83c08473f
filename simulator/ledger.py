"""The ledger: one JSON line per committed row change, written only after the commit.

Line format (the reliability suite compares the lake's history with it):
`{"table": "public.accounts", "key": {"id": 7}, "op": "u", "commit_ts": "...+00:00", "tx": 1234}`.
Rolled-back transactions never reach it; lines of one transaction are written together and
flushed, so a stopped simulator leaves only whole transactions behind.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson

from tidemark.simulator.engine import Change


def iso_utc(ts: datetime) -> str:
    """UTC ISO 8601 with microseconds always present (naive values are UTC already:
    SQL Server's SYSUTCDATETIME() comes back without a zone)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


class Ledger:
    """Appends to `path` (thread-safe); `None` path means no ledger."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[bytes] = open(self.path, "ab")
        self._lock = threading.Lock()

    def append(
        self, changes: Sequence[Change], *, schema: str, commit_ts: datetime, tx: int | None
    ) -> None:
        ts = iso_utc(commit_ts)
        data = b"".join(
            orjson.dumps(
                {
                    "table": f"{schema}.{c.table}",
                    "key": {"id": c.key},
                    "op": c.op,
                    "commit_ts": ts,
                    "tx": tx,
                }
            )
            + b"\n"
            for c in changes
        )
        with self._lock:
            self._handle.write(data)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()

"""A small lake written the way the pipeline writes it (real Delta tables through `Lake`),
with commit times chosen by the test, for the status tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import yaml

from tests.support.lakes import Driver
from tests.support.milestones import event
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.sinks.lake import Lake

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
TABLES = ("public.customers", "public.accounts")
APP = "tidemark:obs"


def position(n: int) -> str:
    """A Postgres-shaped streaming position (commit LSN, event LSN, serial)."""
    return f"{n:016x}{n:016x}{0:08x}"


def write_config(path: Path, *, lake: str, dsn: str, sla: dict | None = None, **extra) -> Path:
    document = {
        "pipeline": "obs",
        "lake": lake,
        "sources": [{"name": "shop", "kind": "postgres", "dsn": dsn, "tables": list(TABLES)}],
        **({"sla": sla} if sla else {}),
        **extra,
    }
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class LakeStory:
    """Batches into `shop.public.customers` and `shop.public.accounts`."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    positions: int = 0
    letter_batches: int = 1000  # dead letters are idempotent per (stage, batch): one each

    def __post_init__(self) -> None:
        self.lake = Lake(self.root, app_id=APP, storage_options=self.storage_options)
        self.drivers = {t: Driver(self.lake, f"shop.{t}", SCHEMA) for t in TABLES}

    def batch(self, table: str, ids: range, *, at: datetime, op: str = "c") -> None:
        """One batch of `op` events for `ids`, committed at source time `at`."""
        events = []
        for i in ids:
            self.positions += 1
            events.append(event(op, position(self.positions), at, name=f"{op}{i}", id=i))
        self.drivers[table].run(events, batch_id=self.lake.last_batch_id() + 1)

    def dead_letters(self, table: str | None, count: int, *, reason: str) -> None:
        letters = [
            DeadLetter(table, f'{{"id": {i}}}', f'{{"id": {i}, "x": "bad"}}', reason, "test", None)
            for i in range(count)
        ]
        self.lake.dead_letters.append(letters, batch_id=self._next_letter_batch(), stage="decode")

    def _next_letter_batch(self) -> int:
        self.letter_batches += 1
        return self.letter_batches

    def close(self) -> None:
        self.lake.close()


def minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)

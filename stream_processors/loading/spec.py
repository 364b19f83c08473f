"""What a load is told and what it reports: the table, the options, progress, batch ids.

Shared by the load (`load.py`), its bulk and reconciling paths, polling and the wiring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from tidemark.connectors.postgres.columns import ColumnPlan
from tidemark.connectors.postgres.copyread import BLOCK_BYTES
from tidemark.connectors.postgres.exported import SnapshotPoint
from tidemark.connectors.postgres.loader import ReadProgress
from tidemark.connectors.postgres.ranges import Period
from tidemark.kernel.columns import Layer
from tidemark.sinks.bulk import FLUSH_BYTES
from tidemark.sinks.lake import Lake
from tidemark.sinks.loads import LoadState


@dataclass(frozen=True)
class RangeSpec:
    """How a table is cut (`snapshot.ranges` in the config)."""

    kind: Literal["ctid", "key", "column"] = "ctid"
    column: str | None = None
    period: Period = "month"


@dataclass(frozen=True)
class LoadOptions:
    """How gently and how a table is read.

    Attributes:
        workers: connections reading at once (`snapshot.max_workers`).
        rows_per_second: a cap on rows read per second, all workers together (None: none).
        rows_per_range: about how many rows a range holds (a resume redoes at most one
            range per worker).
        ranges: how the table is cut.
        replica_dsn: read from this replica instead of the source (`snapshot.dsn`).
    """

    workers: int = 2
    rows_per_second: float | None = None
    rows_per_range: int = 500_000
    ranges: RangeSpec = RangeSpec()
    replica_dsn: str | None = None
    block_bytes: int = BLOCK_BYTES
    flush_bytes: int = FLUSH_BYTES


@dataclass(frozen=True)
class TableSpec:
    """The table to load: its lake name, source, source table, key and layers."""

    table: str
    source: str
    schema: str
    name: str
    key_columns: tuple[str, ...]
    layers: frozenset[Layer]
    unique_key: bool = True
    """The key is a primary key or unique index (a configured key may not be: such a table
    is always loaded through the core, which keeps one version per key)."""
    excluded: frozenset[str] = frozenset()
    """Columns never captured (classified `raw: drop`): not read, so no layer holds them."""

    def kept(self, plans: Sequence[ColumnPlan]) -> tuple[ColumnPlan, ...]:
        """The columns the loader reads (all but the excluded; a key column always)."""
        keys = set(self.key_columns)
        return tuple(p for p in plans if p.name not in self.excluded or p.name in keys)


@dataclass
class LoadProgress:
    """What a display shows of one table's load (updated by the load's threads)."""

    table: str
    phase: str = "waiting"
    total_rows: int = 0
    read: ReadProgress = field(default_factory=ReadProgress)
    ranges: int = 0
    kept: int = 0
    started: float | None = None
    finished: float | None = None

    @property
    def rows(self) -> int:
        return self.read.rows

    @property
    def rate(self) -> float:
        start = self.read.started
        elapsed = (self.finished or time.monotonic()) - start
        return self.rows / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first row, or when done)."""
        rate = self.rate
        if not rate or self.finished is not None:
            return None
        return max(0.0, (self.total_rows - self.rows) / rate)


@dataclass
class LoadResult:
    """What one run of a load did (`check`: the verdict of the comparison, if asked;
    `checking`: the verdict to come, when the comparison runs after the hand-over)."""

    table: str
    state: LoadState
    rows: int
    dead_letters: int
    ranges_read: int
    ranges_kept: int
    versions: int = 0
    seconds: float = 0.0
    check: Any = None
    checking: Future[Any] | None = None


Check = Callable[[Any, TableSpec, int | None], Any]
"""(a cursor in the load's snapshot, the table, the live layer's version to read or None for
the newest) -> a verdict of the lake against it."""


class BatchIds:
    """Batch ids for a load's commits, handed out by `reserve(count)` -> the first of `count`
    new ids: the lake's next ones when nothing else writes, else the runner's."""

    def __init__(self, reserve: Callable[[int], int]) -> None:
        self._reserve = reserve
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> int:
        with self._lock:
            return self._reserve(count)


def lake_ids(lake: Lake) -> Callable[[int], int]:
    """A reserver over the lake alone (no runner commits meanwhile)."""
    state = {"next": 0}

    def reserve(count: int) -> int:
        first = max(state["next"], lake.highest_batch_id() + 1)
        state["next"] = first + count
        return first

    return reserve


def xmin_visible(point: SnapshotPoint) -> str:
    """SQL: true for rows written by a transaction `point`'s snapshot holds (rows unchanged
    since that snapshot)."""
    xid = "(xmin::text::bigint)"
    running = f" AND {xid} NOT IN ({', '.join(map(str, point.xip))})" if point.xip else ""
    return f"({xid} < {point.xmin} OR ({xid} < {point.xmax}{running}))"

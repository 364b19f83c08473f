"""The typed writer API both runtimes use (DESIGN §2: the sinks own it).

`LakeWriter` is everything the embedded runner needs of the lake; `StreamWriter` adds what
the distributed runtime needs to apply several Kafka partitions (streams, `StreamCommit`) in
one commit per layer: each stream's txn version and watermark, catching up with other
workers, and its own conflict type (`SinkCommitConflict`, transient). `sinks.lake.Lake`
implements both; `tests/support/recording_lake.py` is an in-memory `LakeWriter`. Nothing
outside `sinks/` touches a sink's state: what a runtime needs is a method here.

The replay guard (docs/pipeline.md) runs through this API: `applied_position` is the
watermark the core milestones at, `commit_batch` records each stream's new watermark in
every layer, and each layer keeps only what it does not hold yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import pyarrow as pa

from tidemark.kernel.columns import Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.sinks.base import CommitResult, StreamCommit
from tidemark.sinks.batch_log import TableCounts
from tidemark.sinks.layout import Bucketing

Stage = Literal["decode", "apply"]


@dataclass(frozen=True)
class Refused:
    """A table's events of one batch that the runtime could not milestone (e.g. a column
    type the lake's cannot take): they go to the dead letters with `reason`, the batch's other
    tables are committed."""

    changes: TableChanges
    reason: str


@dataclass(frozen=True)
class BatchResult:
    """What `commit_batch` did.

    Attributes:
        batch_id: the batch.
        counts: rows per table and layer operation (what the batch log records).
        commits: one result per (table, layer) written or skipped.
        dead_letters: events sent to the dead letters because they could not be applied.
        skipped: True when every layer and the batch log already held this batch.
        committed_at: when the batch log row was written.
        seconds: wall time of `commit_batch`: what an adaptive batcher steers by.
    """

    batch_id: int
    counts: tuple[TableCounts, ...]
    commits: tuple[CommitResult, ...]
    dead_letters: int
    skipped: bool
    committed_at: datetime
    seconds: float


@dataclass(frozen=True)
class TablePin:
    """One layer of a lake table at one Delta version.

    Attributes:
        uri: the Delta table.
        version: its Delta version.
        batch: the last batch committed to it (0 if none).
        position: the last source position committed to it.
        table_id: the Delta table's id (a table deleted and created again has a new one).
    """

    uri: str
    version: int
    batch: int
    position: str | None
    table_id: str


class LakeWriter(Protocol):
    """What a runtime needs to apply batches to the lake exactly once."""

    def applied_position(
        self, table: str, layers: frozenset[Layer] = ..., stream: str | None = None
    ) -> str | None:
        """The replay guard's watermark: the lowest of `layers`' (None if one holds nothing)."""
        ...

    def current_versions(
        self, table: str, keys: pa.Table, layers: frozenset[Layer] = ...
    ) -> pa.Table | None:
        """The open versions of `keys` (the core's `current`)."""
        ...

    def commit_batch(
        self,
        batch_id: int,
        tables: Sequence[MilestonedTable],
        *,
        source_positions: Mapping[str, str],
        started_at: datetime,
        layers: Mapping[str, frozenset[Layer]] | None = None,
        closed_by: str | None = None,
        streams: Sequence[StreamCommit] = (),
        dead_letters: Sequence[DeadLetter] = (),
        refused: Sequence[Refused] = (),
        sources: Mapping[str, str] | None = None,
        split: Mapping[str, str] | None = None,
        consistent: bool | None = None,
    ) -> BatchResult:
        """Commit a batch to every table's layers, its dead letters, then the batch log
        (`closed_by`: what closed the batch, for the status page; `sources`: each tracked
        source's record as JSON, kept in the batch log so the lake alone says where to resume;
        `split` and `consistent`: the parts of a transaction committed over several batches,
        and the consistent cut)."""
        ...

    def write_dead_letters(
        self,
        letters: Sequence[DeadLetter],
        *,
        batch_id: int,
        stage: Stage = "decode",
        stream: str | None = None,
    ) -> int:
        """Store dead letters of one batch on their own (idempotent per stage and batch)."""
        ...

    def last_batch_id(self) -> int: ...

    def highest_batch_id(self) -> int:
        """The highest batch id the batch log or any layer holds: new batches go above it."""
        ...


class StreamWriter(LakeWriter, Protocol):
    """What the distributed runtime needs on top: several streams per table and commit."""

    app_id: str

    def applied_batch(self, table: str, layer: Layer, stream: str) -> int:
        """The txn version `stream` last committed to `layer` of `table` (0: none)."""
        ...

    def close(self) -> None:
        """Stop background work and drop caches."""
        ...

    def refresh(self, table: str, layers: frozenset[Layer]) -> None:
        """Catch up with other writers of `table` (cached rows they made stale are dropped)."""
        ...

    def forget_cache(self, table: str) -> None:
        """Drop `table`'s cached rows (a partition moved: another worker may have written)."""
        ...

    def shares_buckets(self, table: str, layers: frozenset[Layer]) -> bool:
        """True when other writers may write the same buckets of `table` as this one."""
        ...

    def pin_buckets(
        self,
        table: str,
        layers: frozenset[Layer],
        tables: Sequence[MilestonedTable],
        *,
        partition_buckets: bool,
        pin: Callable[[Bucketing], Bucketing],
    ) -> None:
        """Set the writers' bucketing, with `pin` applied to buckets that follow the Kafka
        partition; a new table gets such buckets when `partition_buckets`."""
        ...

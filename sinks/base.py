"""The contract every layer writer keeps (STYLE §2): open, write, commit, close.

The runtime owns batching and acknowledges source offsets only after `commit` returns for
every sink of the batch. A sink never touches offsets. Optional abilities (compaction) are
separate small protocols, not no-op methods here
(compaction lives in `sinks/maintenance.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from tidemark.kernel.columns import Layer
from tidemark.kernel.model import MilestonedTable


@dataclass(frozen=True)
class StreamCommit:
    """One stream's part of a commit: the Delta txn it records and the position it reaches.

    A *stream* is a sequence of events whose source positions grow, applied in order by one
    writer at a time: a whole table in the embedded runtime (the pipeline's app id), one Kafka
    partition of its topic in the distributed runtime (`<app id>:<topic>:<partition>`). Each
    layer commit records, per stream it holds events of, its txn (`<app>:<table>:<layer>`,
    `batch_id`) and its replay-guard watermark (`position`, never moved back).

    Attributes:
        app: the stream's app id prefix.
        batch_id: the txn version this commit records for the stream.
        position: the highest source position of the stream's events in the commit (None:
            no events; the watermark stays where it was).
    """

    app: str
    batch_id: int
    position: str | None

    def in_layer(self, table: str, layer: str) -> StreamCommit:
        """This part with the txn app id of one layer of one table."""
        return replace(self, app=f"{self.app}:{table}:{layer}")


@dataclass(frozen=True)
class CommitResult:
    """What one `commit` did.

    Attributes:
        layer: the layer written.
        batch_id: the batch committed (or skipped).
        rows: rows written (appended or rewritten as new content).
        skipped: True when the table already held this batch (a replay).
        version: the Delta table version after the commit, if any.
        seconds: wall time of the commit, including retries.
    """

    layer: Layer
    batch_id: int
    rows: int
    skipped: bool
    version: int | None
    seconds: float


@runtime_checkable
class TableSink(Protocol):
    """One layer of one lake table."""

    layer: Layer

    def open(self) -> int:
        """Connect, read back the last committed batch id (0 if none). Fails fast on a bad URI."""
        ...

    def write(
        self, batch: MilestonedTable, *, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> None:
        """Stage one batch of one table; nothing is visible until `commit`.

        `streams` (layer app ids) are the streams the commit records; empty: the sink's own
        app id alone, at `batch_id` and the batch's last position.
        """
        ...

    def commit(self) -> CommitResult:
        """Make the staged batch durable in one Delta commit carrying the txn and position.

        Raises:
            SinkCommitConflict: a concurrent writer won after all retries (transient).
            SinkSchemaMismatch: the batch cannot fit the table (terminal).
        """
        ...

    def close(self) -> None:
        """Release caches; the sink can be opened again."""
        ...

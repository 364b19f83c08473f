"""The contract every layer writer keeps (STYLE §2): open, write, commit, close.

The runtime owns batching and acknowledges source offsets only after `commit` returns for
every sink of the batch. A sink never touches offsets. Optional abilities (compaction) are
separate small protocols, not no-op methods here
(compaction lives in `sinks/maintenance.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tidemark.kernel.columns import Layer
from tidemark.kernel.model import MilestonedTable


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

    def write(self, batch: MilestonedTable, *, batch_id: int) -> None:
        """Stage one batch of one table; nothing is visible until `commit`."""
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

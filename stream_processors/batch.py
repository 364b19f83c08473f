"""What the batcher hands out (`PipelineBatch`) and what it reads of the decoder's output.

Kept apart from the batcher (`batching.py`) so the runtimes and the sinks' callers can read
the shape of a batch on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tidemark.kernel.model import TableChanges
from tidemark.kernel.table_ops import TableOp

ClosedBy = Literal["size", "latency", "force"]


class TxMarkerLike(Protocol):
    """What the batcher reads from the decoder's `TxMarker`."""

    @property
    def status(self) -> str: ...  # "BEGIN" | "END"
    @property
    def tx_id(self) -> str: ...


class DecodedLike(Protocol):
    """What the batcher reads from the decoder's `DecodedBatch` (connectors/decode)."""

    @property
    def changes(self) -> Mapping[str, TableChanges]: ...
    @property
    def transactions(self) -> Sequence[TxMarkerLike]: ...
    @property
    def dead_letters(self) -> Sequence[Any]: ...
    @property
    def last_position(self) -> str | None: ...


@dataclass(frozen=True)
class PipelineBatch:
    """Whole transactions from one or more sources, ready for the core and the lake.

    Attributes:
        batch_id: consecutive from `first_batch_id`; the lake's Delta txn version.
        changes: lake table -> its events, in position order.
        positions: source -> highest position the batch covers (acknowledge up to it once
            the lake commit returned).
        event_count: events in the batch.
        tx_count: distinct source transactions in the batch.
        dead_letters: undecodable records that arrived since the previous batch.
        closed_by: what closed it: "size", "latency" or "force" (`poll(force=True)`).
        ops: table-wide changes (DDL, TRUNCATE) in position order; the runtime applies
            each between the events before and after it, each step under its own batch id
            (`batch_id` .. `last_batch_id`, reserved here).
        split: source -> id of a transaction too big for one batch of which this batch
            holds a part (the last part too, or only its end when nothing of it was left).
            `positions` never covers an open transaction's part.
        consistent: no split transaction is open after this batch: once it is committed,
            the lake holds whole source transactions only (a watermark).
    """

    batch_id: int
    changes: dict[str, TableChanges]
    positions: dict[str, str]
    event_count: int
    tx_count: int
    dead_letters: tuple[Any, ...] = ()
    closed_by: ClosedBy = "size"
    ops: tuple[TableOp, ...] = ()
    split: dict[str, str] = field(default_factory=dict)
    consistent: bool = True

    @property
    def last_batch_id(self) -> int:
        """The highest id reserved for this batch: one per op and one per stretch of
        events around them."""
        return self.batch_id + 2 * len(self.ops)

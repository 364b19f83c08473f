"""Dead letters `<lake>/_tidemark/dead_letters`: events that could not be decoded or applied.

Each row keeps the raw payload and a one-line reason. Writes are idempotent per
(stage, batch id): the decoder's letters and the sinks' own (schema) letters of one batch are
two stages, each recorded once however often the batch is replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa

from tidemark.kernel.dead_letter import DeadLetter
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.retry import retry_conflicts
from tidemark.sinks.delta.table import DeltaHandle, table_uri

Stage = Literal["decode", "apply"]

SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("stage", pa.string()),
        pa.field("table", pa.string()),
        pa.field("raw_key", pa.string()),
        pa.field("raw_value", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("position", pa.string()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


class DeadLetterTable:
    """Appends dead letters with one Delta txn per stage."""

    def __init__(
        self, root: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.app_id = app_id
        self.storage_options = storage_options
        self._handles: dict[Stage, DeltaHandle] = {}

    def _handle(self, stage: Stage) -> DeltaHandle:
        if stage not in self._handles:
            handle = DeltaHandle(
                table_uri(self.root, "_tidemark", "dead_letters"),
                app_id=f"{self.app_id}:_dead_letters:{stage}",
                storage_options=self.storage_options,
            )
            handle.open()
            self._handles[stage] = handle
        handle = self._handles[stage]
        handle.refresh()  # the other stage's handle may have written since
        return handle

    def handles(self) -> list[DeltaHandle]:
        """The open handles (one per stage used so far), for maintenance."""
        return list(self._handles.values())[:1]  # one table; either handle names it

    def refresh(self) -> None:
        """Catch up with other writers of the table."""
        for handle in self._handles.values():
            handle.refresh()

    def append(
        self,
        letters: Sequence[DeadLetter],
        *,
        batch_id: int,
        stage: Stage,
        app: str | None = None,
    ) -> int:
        """Write `letters`; returns how many were written (0 for a replayed batch).

        `app`: the stream whose txn records them (default the lake's app id; see
        `BatchLog.append`).
        """
        if not letters:
            return 0
        handle = self._handle(stage)
        app_id = f"{app}:_dead_letters:{stage}" if app else handle.app_id
        return retry_conflicts(
            handle, lambda: self._append(handle, app_id, letters, batch_id, stage)
        )

    def _append(
        self,
        handle: DeltaHandle,
        app_id: str,
        letters: Sequence[DeadLetter],
        batch_id: int,
        stage: Stage,
    ) -> int:
        if batch_id <= handle.applied_batch(app_id):
            return 0
        now = datetime.now(UTC)
        rows = [
            {
                "batch_id": batch_id,
                "stage": stage,
                "table": letter.table,
                "raw_key": letter.raw_key,
                "raw_value": letter.raw_value,
                "reason": letter.reason,
                "origin": letter.origin,
                "position": letter.position,
                "recorded_at": now,
            }
            for letter in letters
        ]
        handle.commit(
            pa.Table.from_pylist(rows, schema=SCHEMA),
            batch_id=batch_id,
            position=None,
            streams=[StreamCommit(app_id, batch_id, None)],
        )
        return len(rows)

    def read(self) -> pa.Table:
        handle = self._handle("decode")
        return SCHEMA.empty_table() if handle.dt is None else handle.read()

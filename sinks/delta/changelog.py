"""The changelog layer: every event once (DESIGN §3.2), append only.

Appends are cheap (one new file per commit); the maintenance thread compacts them. Events
at or below the position the table already holds are dropped, so a replay that arrives under
a new batch id still lands once.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION, Layer
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import CommitResult
from tidemark.sinks.delta.retry import commit_with_retries
from tidemark.sinks.delta.table import DeltaHandle
from tidemark.sinks.errors import SinkError


class ChangelogSink:
    """Writes `<lake>/changelog/<table>`."""

    layer = Layer.CHANGELOG

    def __init__(
        self, uri: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.handle = DeltaHandle(uri, app_id=app_id, storage_options=storage_options)
        self._staged: tuple[MilestonedTable, int] | None = None

    def open(self) -> int:
        self.handle.open()
        return self.handle.applied_batch()

    def write(self, batch: MilestonedTable, *, batch_id: int) -> None:
        self._staged = (batch, batch_id)

    def commit(self) -> CommitResult:
        if self._staged is None:
            raise SinkError("commit without write", table=self.handle.uri)
        batch, batch_id = self._staged

        def append_new_events() -> int:
            rows = batch.changelog
            applied = self.handle.applied_position()
            if applied is not None and rows.num_rows:
                rows = rows.filter(pc.greater(rows.column(POSITION), pa.scalar(applied)))
            data, evolves = self.handle.fit(rows)
            self.handle.commit(
                data, batch_id=batch_id, position=batch.last_position, evolves=evolves
            )
            return int(data.num_rows)

        result = commit_with_retries(
            self.handle, layer=self.layer, batch_id=batch_id, attempt=append_new_events
        )
        self._staged = None  # kept on failure, so the caller may retry the same batch
        return result

    def close(self) -> None:
        self._staged = None

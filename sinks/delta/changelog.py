"""The changelog layer: every event once (DESIGN §3.2), append only.

Appends are cheap (one new file per commit); the maintenance thread compacts them. Before
appending, the layer applies the replay guard at its own watermark (`tidemark.kernel.replay`):
after a crash between layers it can hold a batch the layer the core milestoned from does
not, and a replay of that batch under a new batch id must still land once here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tidemark.kernel.columns import Layer
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import CommitResult, StreamCommit
from tidemark.sinks.delta.retry import commit_with_retries
from tidemark.sinks.delta.table import DeltaHandle
from tidemark.sinks.errors import SinkError
from tidemark.sinks.guard import not_applied


class ChangelogSink:
    """Writes `<lake>/changelog/<table>`."""

    layer = Layer.CHANGELOG

    def __init__(
        self, uri: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.handle = DeltaHandle(uri, app_id=app_id, storage_options=storage_options)
        self._staged: tuple[MilestonedTable, int, Sequence[StreamCommit]] | None = None

    def open(self) -> int:
        self.handle.open()
        return self.handle.applied_batch()

    def write(
        self, batch: MilestonedTable, *, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> None:
        self._staged = (batch, batch_id, streams)

    def commit(self) -> CommitResult:
        if self._staged is None:
            raise SinkError("commit without write", table=self.handle.uri)
        batch, batch_id, streams = self._staged

        def append_new_events() -> int:
            rows = batch.changelog
            rows = rows.filter(not_applied(self.handle, rows, streams))
            data, evolves = self.handle.fit(rows)
            self.handle.commit(
                data,
                batch_id=batch_id,
                position=batch.last_position,
                evolves=evolves,
                streams=streams,
            )
            return int(data.num_rows)

        result = commit_with_retries(
            self.handle,
            layer=self.layer,
            batch_id=streams[0].batch_id if streams else batch_id,
            attempt=append_new_events,
            app_id=streams[0].app if streams else None,
        )
        self._staged = None  # kept on failure, so the caller may retry the same batch
        return result

    def close(self) -> None:
        self._staged = None

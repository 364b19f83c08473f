"""The live layer: the current row per key (DESIGN §3.2), partitioned by `_tm_bucket`.

A batch's upserts and deletes are applied to the touched buckets in memory and the buckets
are replaced in one commit; untouched buckets are not read or rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from tidemark.kernel.columns import BUCKET, Layer
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.bucketed import BucketedSink
from tidemark.sinks.delta.buckets import key_filter, split_by_bucket
from tidemark.sinks.guard import not_applied
from tidemark.sinks.layout import in_list


class LiveSink(BucketedSink):
    """Writes `<lake>/live/<table>`: upserts replace a key's row, deletes remove it."""

    layer = Layer.LIVE

    def stage(
        self, batch: MilestonedTable, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> tuple[pa.Table, pa.Table]:
        keys = list(batch.key_columns)
        # A key's row here already at or past its last change of the batch keeps it: live may
        # be ahead of the layer the batch was milestoned from (the replay guard, per layer).
        upserts = batch.live_upserts.filter(not_applied(self.handle, batch.live_upserts, streams))
        deletes = batch.live_deletes.filter(not_applied(self.handle, batch.live_deletes, streams))
        touched = pa.concat_tables(
            [upserts.select(keys), deletes.select(keys)], promote_options="permissive"
        )
        return upserts, touched

    def rebuild(
        self,
        current: dict[int, pa.Table],
        new_rows: pa.Table,
        touched: pa.Table,
        batch: MilestonedTable,
    ) -> tuple[dict[int, pa.Table], pa.Table]:
        keys = batch.key_columns
        upserts = split_by_bucket(new_rows)
        hit = split_by_bucket(touched)
        content = {}
        for bucket, rows in current.items():
            kept = key_filter(rows, hit[bucket], keys, keep=False)
            added = upserts.get(bucket)
            content[bucket] = kept if added is None else pa.concat_tables([kept, added])
        return content, new_rows.slice(0, 0)

    def predicate(self, buckets: Sequence[int], batch_id: int) -> str:
        return in_list(BUCKET, buckets)

    def mor_replaced(self, batch: MilestonedTable, touched: pa.Table) -> pa.Table:
        return touched  # the keys of the rows the batch changes that live lacks (`stage`)

    def mor_appends(
        self, new_rows: pa.Table, replaced: Callable[[], pa.Table], batch: MilestonedTable
    ) -> list[tuple[dict[str, str], pa.Table]]:
        return [({}, new_rows)]

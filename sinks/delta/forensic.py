"""The forensic layer: every version of every key (DESIGN §3.2), history kept apart.

Physical layout: partitions `_tm_current=<bool>/_tm_bucket=<n>`. Open versions live in the
`_tm_current=true` partitions, which a commit replaces bucket by bucket; closed versions are
only ever appended to `_tm_current=false`. The commit's predicate
`_tm_bucket IN (...) AND (_tm_current = true OR _tm_batch_out = <batch>)` matches the open
versions of the touched buckets and, through file statistics, none of the history files, so
the cost of a commit follows the current rows and does not grow with history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import (
    BATCH_IN,
    BATCH_OUT,
    BUCKET,
    CURRENT,
    OP,
    POSITION,
    VALID_FROM,
    VALID_TO,
    Layer,
)
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.bucketed import BucketedSink, conform
from tidemark.sinks.delta.buckets import join_rows, key_filter, split_by_bucket
from tidemark.sinks.layout import in_list

_STATS = (VALID_FROM, VALID_TO, BATCH_IN, BATCH_OUT, POSITION, OP)


class ForensicSink(BucketedSink):
    """Writes `<lake>/forensic/<table>` and answers which versions are open."""

    layer = Layer.FORENSIC
    partition_by = (CURRENT, BUCKET)
    scope = ((CURRENT, "=", "true"),)
    history_values = ((CURRENT, "false"),)
    mor_partition_by = (CURRENT,)
    mor_scope = ((CURRENT, "true"),)
    mor_cache_appends = True

    def configuration(self, key_columns: Sequence[str]) -> dict[str, str]:
        # Statistics on `_tm_batch_out` let the commit predicate skip every history file;
        # on the keys and validity they let as-of queries skip files too.
        names = [n if n.isidentifier() else f"`{n}`" for n in (*key_columns, *_STATS)]
        return {"delta.dataSkippingStatsColumns": ",".join(names)}

    def stage(
        self, batch: MilestonedTable, batch_id: int, streams: Sequence[StreamCommit] = ()
    ) -> tuple[pa.Table, pa.Table]:
        keys = list(batch.key_columns)
        inserts = batch.forensic_inserts
        if CURRENT in inserts.column_names:
            inserts = inserts.drop_columns([CURRENT])
        inserts = inserts.append_column(CURRENT, pc.is_null(inserts.column(VALID_TO)))
        touched = pa.concat_tables(
            [inserts.select(keys), batch.forensic_closes.select(keys)],
            promote_options="permissive",
        )
        return inserts, touched

    def rebuild(
        self,
        current: dict[int, pa.Table],
        new_rows: pa.Table,
        touched: pa.Table,
        batch: MilestonedTable,
    ) -> tuple[dict[int, pa.Table], pa.Table]:
        keys = list(batch.key_columns)
        wanted = [*keys, VALID_TO, BATCH_OUT]
        closes = conform(
            batch.forensic_closes.select(wanted),
            pa.schema([new_rows.schema.field(name) for name in wanted]),
        )
        opened = split_by_bucket(new_rows.filter(new_rows.column(CURRENT)))
        history = [new_rows.filter(pc.invert(new_rows.column(CURRENT)))]
        content = {}
        closing = []
        for bucket, rows in current.items():
            hit = key_filter(rows, closes, keys, keep=True)
            if hit.num_rows:
                closing.append(hit)
                rows = key_filter(rows, closes, keys, keep=False)
            added = opened.get(bucket)
            content[bucket] = rows if added is None else pa.concat_tables([rows, added])
        if closing:
            versions = pa.concat_tables(closing).drop_columns([VALID_TO, BATCH_OUT, CURRENT])
            mine, theirs = join_rows(versions, closes, keys)
            closed = versions.take(mine)
            for name in (VALID_TO, BATCH_OUT):
                closed = closed.append_column(closes.field(name), closes.column(name).take(theirs))
            closed = closed.append_column(CURRENT, pa.repeat(False, closed.num_rows))
            history.append(conform(closed, new_rows.schema))
        return content, pa.concat_tables(history)

    def predicate(self, buckets: Sequence[int], batch_id: int) -> str:
        return f"{in_list(BUCKET, buckets)} AND ({CURRENT} = true OR {BATCH_OUT} = {batch_id})"

    def mor_replaced(self, batch: MilestonedTable, touched: pa.Table) -> pa.Table:
        return batch.forensic_closes.select(list(batch.key_columns))

    def mor_appends(
        self, new_rows: pa.Table, replaced: Callable[[], pa.Table], batch: MilestonedTable
    ) -> list[tuple[dict[str, str], pa.Table]]:
        """Open versions to `_tm_current=true`; versions closed by the batch (read back and
        stamped with their end) and those opened and closed within it to history."""
        keys = list(batch.key_columns)
        current = new_rows.column(CURRENT)
        opened = new_rows.filter(current).drop_columns([CURRENT])
        history = [new_rows.filter(pc.invert(current)).drop_columns([CURRENT])]
        if batch.forensic_closes.num_rows:
            old = replaced()
            if old.num_rows:
                wanted = [*keys, VALID_TO, BATCH_OUT]
                closes = conform(
                    batch.forensic_closes.select(wanted),
                    pa.schema([old.schema.field(name) for name in wanted]),
                )
                closed = old.drop_columns([VALID_TO, BATCH_OUT]).join(
                    closes, keys, join_type="inner"
                )
                history.append(conform(closed, opened.schema))
        return [({CURRENT: "true"}, opened), ({CURRENT: "false"}, pa.concat_tables(history))]

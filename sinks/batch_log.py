"""The batch log `<lake>/_tidemark/batches` (DESIGN §3.2): one row per committed batch.

Written last in a batch, after every table, with the txn (`<app>:_batches`, batch id); its
txn version is therefore the last batch the whole lake holds.
Each row also carries what the lake holds of every source (`sources`: source -> `SourceRecord`
JSON, `tidemark/kernel/positions.py`): the Debezium offsets it holds everything up to, the
database it was built from, the tables armed and being armed. The last row's is where
capture resumes.

A source transaction too big for one batch is committed in parts: each part's row names it
in `split_transactions`, and `consistent` is false until the row of its last part. The last
row with `consistent` true is the lake's watermark (`sinks/watermark.py`); every commit of a
writer that keeps it also carries it in its commit metadata, so readers find it in the log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.retry import retry_conflicts
from tidemark.sinks.delta.table import DeltaHandle, table_uri
from tidemark.sinks.watermark import COLUMNS, Watermark, advance, fold, stamp, stamped

SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.int64(), nullable=False),
        pa.field("source_positions", pa.map_(pa.string(), pa.string())),
        pa.field(
            "tables",
            pa.list_(
                pa.struct(
                    [
                        ("table", pa.string()),
                        ("changelog", pa.int64()),
                        ("live_upserts", pa.int64()),
                        ("live_deletes", pa.int64()),
                        ("forensic_inserts", pa.int64()),
                        ("forensic_closes", pa.int64()),
                        ("dead_letters", pa.int64()),
                    ]
                )
            ),
        ),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("committed_at", pa.timestamp("us", tz="UTC")),
        # what closed the batch: size, latency or force (NULL: a writer that does not say)
        pa.field("closed_by", pa.string()),
        # what the lake holds of each source (`SourceRecord` JSON; NULL: a writer that keeps none)
        pa.field("sources", pa.map_(pa.string(), pa.string())),
        # source -> id of a transaction split across batches of which this batch holds a part
        pa.field("split_transactions", pa.map_(pa.string(), pa.string())),
        # no split transaction open after this batch (NULL: a writer that does not say)
        pa.field("consistent", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class TableCounts:
    """Rows one batch brought to one table, per layer operation."""

    table: str
    changelog: int = 0
    live_upserts: int = 0
    live_deletes: int = 0
    forensic_inserts: int = 0
    forensic_closes: int = 0
    dead_letters: int = 0


class BatchLog:
    """Appends and reads the batch log."""

    def __init__(
        self, root: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.handle = DeltaHandle(
            table_uri(root, "_tidemark", "batches"),
            app_id=f"{app_id}:_batches",
            storage_options=storage_options,
        )
        self.handle.open()
        self._cut: Watermark | None = None
        self._cut_known = False

    def last_batch_id(self) -> int:
        return self.handle.applied_batch()

    def append(
        self,
        batch_id: int,
        *,
        source_positions: Mapping[str, str],
        counts: Sequence[TableCounts],
        started_at: datetime,
        committed_at: datetime | None = None,
        closed_by: str | None = None,
        app: str | None = None,
        sources: Mapping[str, str] | None = None,
        split: Mapping[str, str] | None = None,
        consistent: bool | None = None,
    ) -> bool:
        """Record one batch; False (and nothing written) if it is already recorded.

        Args:
            closed_by: what closed the batch (`size`, `latency`, `force`), for the status
                page; a batch log written before this column existed gains it here.
            app: the stream whose txn records the row (default the lake's app id); a commit
                of several Kafka partitions records it under its first partition's, whose
                batch ids grow (the lake's one would not: ids of partitions interleave).
            sources: source -> its record (JSON) as of this batch; None keeps no record.
            split: source -> id of a transaction split across batches that this batch
                holds a part of (its last part included).
            consistent: True when no split transaction is open after this batch; None for
                writers that keep no watermark (the distributed runtime).
        """
        return retry_conflicts(
            self.handle,
            lambda: self._append(
                batch_id,
                source_positions,
                counts,
                started_at,
                committed_at,
                closed_by,
                app,
                sources,
                split or {},
                consistent,
            ),
        )

    def _append(
        self,
        batch_id: int,
        source_positions: Mapping[str, str],
        counts: Sequence[TableCounts],
        started_at: datetime,
        committed_at: datetime | None,
        closed_by: str | None,
        app: str | None,
        sources: Mapping[str, str] | None,
        split: Mapping[str, str],
        consistent: bool | None,
    ) -> bool:
        app_id = f"{app}:_batches" if app else self.handle.app_id
        if batch_id <= self.handle.applied_batch(app_id):
            return False
        committed = committed_at or datetime.now(UTC)
        row = {
            "batch_id": batch_id,
            "source_positions": list(source_positions.items()),
            "tables": [vars(c) for c in counts],
            "started_at": started_at,
            "committed_at": committed,
            "closed_by": closed_by,
            "sources": list(sources.items()) if sources else None,
            "split_transactions": list(split.items()),
            "consistent": consistent,
        }
        position = max(source_positions.values(), default=None)
        cut = None
        if consistent is not None:
            cut = advance(
                self._current_cut(),
                batch_id=batch_id,
                positions=source_positions,
                split=split or {},
                consistent=consistent,
                committed_at=committed,
            )
        schema = self.handle.schema
        self.handle.commit(
            pa.Table.from_pylist([row], schema=SCHEMA),
            batch_id=batch_id,
            position=position,
            evolves=schema is not None and not set(SCHEMA.names) <= set(schema.names),
            streams=[StreamCommit(app_id, batch_id, position)],
            metadata=stamp(cut) if cut is not None else None,
        )
        if cut is not None:
            self._cut, self._cut_known = cut, True
        return True

    def last_sources(self) -> dict[str, str]:
        """source -> record JSON, as of the last batch that carried records ({} if none).

        Reads the newest rows only (batch ids above the last one's minus a few: replays
        and rows written without records are skipped back over).
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        self.handle.refresh()
        if self.handle.dt is None or "sources" not in (self.handle.schema or SCHEMA).names:
            return {}
        last = self.handle.applied_batch()
        window = 64
        while True:
            rows = self.handle.read(ds.field("batch_id") > last - window).select(
                ["batch_id", "sources"]
            )
            rows = rows.filter(pc.is_valid(rows.column("sources")))
            if rows.num_rows or window > last:
                break
            window *= 8
        if not rows.num_rows:
            return {}
        newest = rows.take(
            [int(pc.index(rows.column("batch_id"), pc.max(rows.column("batch_id"))).as_py())]
        )
        return {str(k): str(v) for k, v in (newest.column("sources")[0].as_py() or [])}

    def _current_cut(self) -> Watermark | None:
        """The watermark before the next row: from the newest stamped commit, else folded
        from the rows (once per process; rows of writers that kept none count as whole)."""
        if not self._cut_known:
            found = stamped(self.handle.dt) if self.handle.dt is not None else None
            if isinstance(found, Watermark):
                self._cut = found
            elif self.handle.dt is not None:
                log = self.read()
                self._cut = fold(
                    log.select([c for c in COLUMNS if c in log.column_names]).to_pylist()
                )
            self._cut_known = True
        return self._cut

    def read(self) -> pa.Table:
        """All rows, for `tidemark status` and tests."""
        self.handle.refresh()
        return SCHEMA.empty_table() if self.handle.dt is None else self.handle.read()


def describe(counts: Sequence[TableCounts]) -> str:
    """A compact one-line summary for logs."""
    return json.dumps({c.table: c.changelog for c in counts})

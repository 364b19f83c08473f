"""Drive a `Lake` with events the way the runtime does, and read its layers back."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from deltalake import DeltaTable

from tests.support.milestones import milestone_rows
from tidemark.kernel import columns as c
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.lake import BatchResult, Lake

PHYSICAL = (c.BUCKET, c.CURRENT)


class Driver:
    """Runs batches of events for one table through current_versions -> milestone -> commit."""

    def __init__(self, lake: Lake, table: str, schema: pa.Schema, keys=("id",)):
        self.lake = lake
        self.table = table
        self.schema = schema
        self.keys = tuple(keys)
        self.batch_id = lake.last_batch_id()

    def milestone(self, events, *, batch_id: int, schema: pa.Schema | None = None):
        schema = schema or self.schema
        key_rows = {tuple(e[k] for k in self.keys) for e in events}
        key_schema = pa.schema([schema.field(k) for k in self.keys])
        keys = pa.Table.from_pylist(
            [dict(zip(self.keys, k, strict=True)) for k in sorted(key_rows)], schema=key_schema
        )
        current = self.lake.current_versions(self.table, keys)
        return milestone_rows(self.table, self.keys, schema, events, current, batch_id=batch_id)

    def run(self, events, *, batch_id: int | None = None, schema=None) -> BatchResult:
        if batch_id is None:
            self.batch_id += 1
            batch_id = self.batch_id
        mt = self.milestone(events, batch_id=batch_id, schema=schema)
        return self.lake.commit_batch(
            batch_id,
            [mt],
            source_positions={"src": mt.last_position},
            started_at=datetime.now(UTC),
        )

    def read(self, layer: str, *, keep_physical: bool = False) -> list[dict]:
        uri = table_uri(self.lake.root, layer, self.table)
        dt = DeltaTable(uri, storage_options=self.lake.storage_options or None)
        rows = pa.table(dt.scan()).to_pylist()  # applies deletion vectors
        if not keep_physical:
            rows = [{k: v for k, v in r.items() if k not in PHYSICAL} for r in rows]
        order = (*self.keys, c.VALID_FROM) if layer == "forensic" else (c.POSITION,)
        if layer == "live":
            order = self.keys
        return sorted(rows, key=lambda r: tuple((r.get(k) is None, r.get(k)) for k in order))

"""The schema log `<lake>/_tidemark/schema_changes`: every table-wide change applied, once.

One row per `TableOp` (DDL, TRUNCATE) with its position, commit time, statement, what it did
to the lake (`outcome`) and the table's generation after it. It is written last in the op's
step, so a replayed op finds itself here and is not applied twice; `status` reads the
generations and refusals from it, and the runtime names the refusing DDL in dead letters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.sinks.delta.table import DeltaHandle, table_uri

SCHEMA = pa.schema(
    [
        pa.field("table", pa.string()),
        pa.field("position", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("details", pa.string()),
        pa.field("ddl", pa.string()),
        pa.field("source_ts", pa.timestamp("us", tz="UTC")),
        pa.field("generation", pa.int64()),
        pa.field("outcome", pa.string()),
        pa.field("batch_id", pa.int64()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)
REFUSED = "refused"
"""Outcomes starting with this word stop the table: its later events are dead letters."""


@dataclass(frozen=True)
class SchemaChange:
    """One row of the schema log (see the module docstring)."""

    table: str
    position: str
    kind: str
    details: Mapping[str, object]
    ddl: str | None
    source_ts: datetime | None
    generation: int
    outcome: str


class SchemaLog:
    """Appends and reads the schema log; keeps each table's state in memory once read."""

    def __init__(
        self, root: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.handle = DeltaHandle(
            table_uri(root, "_tidemark", "schema_changes"),
            app_id=f"{app_id}:_schema",
            storage_options=storage_options,
        )
        self.handle.open()
        self._rows: pa.Table | None = None
        self._lock = threading.Lock()

    def read(self) -> pa.Table:
        """Every change recorded, in the order written."""
        with self._lock:
            if self._rows is None:
                self.handle.refresh()
                self._rows = SCHEMA.empty_table() if self.handle.dt is None else self.handle.read()
            return self._rows

    def _of(self, table: str) -> pa.Table:
        """One table's changes in source order (files come back in no particular order)."""
        rows = self.read()
        return rows.filter(pc.equal(rows.column("table"), table)).sort_by("position")

    def applied(self, table: str, position: str) -> bool:
        """True when the change of `table` at `position` is recorded (a replayed op)."""
        rows = self._of(table)
        return bool(pc.any(pc.equal(rows.column("position"), position)).as_py())

    def generation(self, table: str) -> int:
        """The table's generation: 1, plus one for each time it was created again."""
        rows = self._of(table)
        return int(rows.column("generation")[-1].as_py()) if rows.num_rows else 1

    def refusal(self, table: str) -> str | None:
        """Why the table's events go to the dead letters since a DDL, or None."""
        rows = self._of(table)
        if not rows.num_rows:
            return None
        outcome = rows.column("outcome")[-1].as_py() or ""
        return outcome if outcome.startswith(REFUSED) else None

    def changes(self, table: str) -> list[SchemaChange]:
        """The table's recorded changes, oldest first."""
        return [
            SchemaChange(
                r["table"],
                r["position"],
                r["kind"],
                json.loads(r["details"] or "{}"),
                r["ddl"],
                r["source_ts"],
                int(r["generation"]),
                r["outcome"] or "",
            )
            for r in self._of(table).to_pylist()
        ]

    def append(self, changes: Sequence[SchemaChange], *, batch_id: int) -> bool:
        """Record `changes` in one commit; False (nothing written) for a replayed batch."""
        if not changes or batch_id <= self.handle.applied_batch():
            return False
        now = datetime.now(UTC)
        rows = [
            {
                "table": c.table,
                "position": c.position,
                "kind": c.kind,
                "details": json.dumps(c.details, default=str, sort_keys=True),
                "ddl": c.ddl,
                "source_ts": c.source_ts,
                "generation": c.generation,
                "outcome": c.outcome,
                "batch_id": batch_id,
                "recorded_at": now,
            }
            for c in changes
        ]
        data = pa.Table.from_pylist(rows, schema=SCHEMA)
        self.handle.commit(data, batch_id=batch_id, position=max(c.position for c in changes))
        with self._lock:
            if self._rows is not None:
                self._rows = pa.concat_tables([self._rows, data])
        return True

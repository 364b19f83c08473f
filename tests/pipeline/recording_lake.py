"""An in-memory recording lake for testing the runner (STYLE §2, like quix's DummySink).

It keeps what each batch committed and the open versions per key, so the real core can
chain versions across batches; it can fail on purpose (a crash, or transient errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from tidemark.kernel.dead_letter import dead_letters_of
from tidemark.kernel.errors import TransientError
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.writer import BatchResult


class Crash(Exception):
    """Raised by the recording lake to simulate a process dying mid-commit."""


@dataclass
class Committed:
    batch_id: int
    tables: dict[str, MilestonedTable]
    positions: dict[str, str]


@dataclass
class RecordingLake:
    crash_at_batch: int | None = None
    transient_failures: int = 0
    batches: list[Committed] = field(default_factory=list)
    dead_letters: list = field(default_factory=list)
    _open: dict[str, dict[tuple, dict]] = field(default_factory=dict)
    _applied: dict[str, str] = field(default_factory=dict)
    _schemas: dict[str, pa.Schema] = field(default_factory=dict)

    def applied_position(
        self, table: str, layers: frozenset = frozenset(), stream: str | None = None
    ) -> str | None:
        return self._applied.get(table)

    def current_versions(
        self, table: str, keys: pa.Table, layers: frozenset = frozenset()
    ) -> pa.Table | None:
        rows = self._open.get(table, {})
        names = keys.column_names
        wanted = {tuple(r[n] for n in names) for r in keys.to_pylist()}
        found = [row for key, row in rows.items() if key in wanted]
        if not found:
            return None
        return pa.Table.from_pylist(found, schema=self._schemas[table])

    def commit_batch(
        self,
        batch_id: int,
        tables: Sequence[MilestonedTable],
        *,
        source_positions: Mapping[str, str],
        started_at: datetime,
        layers: Mapping | None = None,
        closed_by: str | None = None,
        streams: Sequence = (),
        dead_letters: Sequence = (),
        refused: Sequence = (),
        sources: Mapping[str, str] | None = None,
    ) -> BatchResult:
        if self.crash_at_batch == batch_id:
            raise Crash(f"crash at batch {batch_id}")
        if self.transient_failures:
            self.transient_failures -= 1
            raise TransientError("commit conflict (simulated)")
        for t in tables:
            rows = self._open.setdefault(t.table, {})
            for close in t.forensic_closes.to_pylist():
                rows.pop(tuple(close[k] for k in t.key_columns), None)
            inserts = t.forensic_inserts
            if inserts.num_rows:
                self._schemas.setdefault(t.table, inserts.schema)
            for row in inserts.to_pylist():
                key = tuple(row[k] for k in t.key_columns)
                if row["_tm_valid_to"] is None:
                    rows[key] = row
            if t.last_position:
                self._applied[t.table] = max(self._applied.get(t.table, ""), t.last_position)
        self.batches.append(
            Committed(batch_id, {t.table: t for t in tables}, dict(source_positions))
        )
        applied = [
            letter
            for r in refused
            for letter in dead_letters_of(
                r.changes.table,
                r.changes.key_columns,
                r.changes.events,
                reason=r.reason,
                origin="test",
            )
        ]
        self.dead_letters.extend([*dead_letters, *applied])
        return BatchResult(batch_id, (), (), len(applied), False, datetime.now(UTC), 0.0)

    def write_dead_letters(
        self, letters: Sequence, *, batch_id: int, stage: str = "decode", stream=None
    ) -> int:
        self.dead_letters.extend(letters)
        return len(letters)

    def last_batch_id(self) -> int:
        return self.batches[-1].batch_id if self.batches else 0

    def highest_batch_id(self) -> int:
        return self.last_batch_id()

    # -- for assertions -------------------------------------------------------------------
    def changelog(self, table: str) -> list[dict]:
        return [
            row
            for b in self.batches
            if table in b.tables
            for row in b.tables[table].changelog.to_pylist()
        ]

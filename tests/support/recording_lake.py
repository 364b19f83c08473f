"""An in-memory stand-in for `sinks.lake.Lake`, for testing the runtimes around it
(like quix's `DummySink`). It records what it is asked to commit and keeps the open
versions per key, with the same idempotence rule (a batch id at or below the last is a
no-op). The real Delta sinks are tested against real Delta tables, never with this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.batch_log import TableCounts
from tidemark.sinks.writer import BatchResult


class RecordingLake:
    """Same methods as `Lake`; everything stays in memory."""

    def __init__(self, root: str = "memory://", *, app_id: str = "test", **_: object) -> None:
        self.root = root
        self.app_id = app_id
        self.batches: list[tuple[int, list[MilestonedTable], dict[str, str]]] = []
        self.dead: list[tuple[int, DeadLetter]] = []
        self._open: dict[str, dict[tuple, dict]] = {}
        self._positions: dict[str, str] = {}

    def applied_position(
        self, table: str, layers: frozenset = frozenset(), stream: str | None = None
    ) -> str | None:
        return self._positions.get(table)

    def current_versions(
        self, table: str, keys: pa.Table, layers: frozenset = frozenset()
    ) -> pa.Table | None:
        rows = self._open.get(table, {})
        names = keys.column_names
        found = [
            rows[k] for k in (tuple(r[n] for n in names) for r in keys.to_pylist()) if k in rows
        ]
        return pa.Table.from_pylist(found) if found else None

    def commit_batch(
        self,
        batch_id: int,
        tables: Sequence[MilestonedTable],
        *,
        source_positions: Mapping[str, str],
        started_at: datetime,
        layers: Mapping[str, frozenset[Layer]] | None = None,
        closed_by: str | None = None,
        streams: Sequence = (),
        dead_letters: Sequence[DeadLetter] = (),
        refused: Sequence = (),
        split: Mapping[str, str] | None = None,
        consistent: bool | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> BatchResult:
        if batch_id <= self.last_batch_id():
            return BatchResult(batch_id, (), (), 0, True, datetime.now(UTC), 0.0)
        for mt in tables:
            rows = self._open.setdefault(mt.table, {})
            keys = mt.key_columns
            for close in mt.forensic_closes.to_pylist():
                rows.pop(tuple(close[k] for k in keys), None)
            current = mt.forensic_inserts.filter(pc.is_null(mt.forensic_inserts["_tm_valid_to"]))
            for row in current.to_pylist():
                rows[tuple(row[k] for k in keys)] = row
            if mt.last_position:
                self._positions[mt.table] = max(mt.last_position, self._positions.get(mt.table, ""))
        self.batches.append((batch_id, list(tables), dict(source_positions)))
        self.dead.extend((batch_id, letter) for letter in dead_letters)
        counts = tuple(TableCounts(mt.table, changelog=mt.changelog.num_rows) for mt in tables)
        return BatchResult(batch_id, counts, (), 0, False, datetime.now(UTC), 0.0)

    def write_dead_letters(
        self,
        letters: Sequence[DeadLetter],
        *,
        batch_id: int,
        stage: str = "decode",
        stream: str | None = None,
    ) -> int:
        self.dead.extend((batch_id, letter) for letter in letters)
        return len(letters)

    def last_batch_id(self) -> int:
        return self.batches[-1][0] if self.batches else 0

    def highest_batch_id(self) -> int:
        return self.last_batch_id()

    def close(self) -> None:
        pass

"""Test helpers for the milestoning core: event builders and an in-memory lake.

`MemoryLake` applies `MilestonedTable`s the way the Delta sinks must (closes before inserts,
live upserts/deletes by key), so tests can feed a batch's result back as the next batch's
`current` and query as-of instants. It is a recording sink for tests, not a mock of Delta.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

from tidemark.kernel.columns import (
    BATCH_IN,
    BATCH_OUT,
    OP,
    POSITION,
    SOURCE_TS,
    TX_ID,
    UNCHANGED_TOAST,
    VALID_FROM,
    VALID_TO,
)
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.stream_processors.milestoning.core import milestone

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("seen", UTC_US),
        ("blob", pa.binary()),
        ("note", pa.string()),  # the "TOASTed" column in tests
    ]
)
SOURCE = tuple(SCHEMA.names)


def ts(seconds: float) -> datetime:
    """T0 plus some seconds."""
    return T0 + timedelta(seconds=seconds)


def pos(i: int) -> str:
    """A fixed-width position, shaped as the decoder makes them (commit, event, counter)."""
    return f"{i:016x}{i:016x}{0:08x}"


def events(
    rows: list[dict[str, Any]], *, schema: pa.Schema = SCHEMA, toast: bool = True
) -> pa.Table:
    """An events table from row dicts holding source columns plus op, pos, ts, tx, unchanged.

    Missing source columns are NULL; `pos` defaults to the row number, `ts` to `pos` seconds.
    """
    data: dict[str, list[Any]] = {name: [] for name in schema.names}
    meta: dict[str, list[Any]] = {
        OP: [],
        POSITION: [],
        TX_ID: [],
        SOURCE_TS: [],
        UNCHANGED_TOAST: [],
    }
    for i, row in enumerate(rows):
        for name in schema.names:
            data[name].append(row.get(name))
        p = row.get("pos", i + 1)
        meta[OP].append(row["op"])
        meta[POSITION].append(pos(p))
        meta[TX_ID].append(str(row.get("tx", p)))
        meta[SOURCE_TS].append(ts(row.get("ts", p)))
        meta[UNCHANGED_TOAST].append(row.get("unchanged", []))
    columns = [pa.array(data[f.name], f.type) for f in schema]
    fields = list(schema)
    columns += [
        pa.array(meta[OP], pa.string()),
        pa.array(meta[POSITION], pa.string()),
        pa.array(meta[TX_ID], pa.string()),
        pa.array(meta[SOURCE_TS], UTC_US),
    ]
    fields += [
        pa.field(OP, pa.string()),
        pa.field(POSITION, pa.string()),
        pa.field(TX_ID, pa.string()),
        pa.field(SOURCE_TS, UTC_US),
    ]
    if toast:
        columns.append(pa.array(meta[UNCHANGED_TOAST], pa.list_(pa.string())))
        fields.append(pa.field(UNCHANGED_TOAST, pa.list_(pa.string())))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def changes(table: pa.Table, keys: tuple[str, ...] = ("id",)) -> TableChanges:
    """Wrap an events table for the core."""
    return TableChanges(table="shop.public.t", key_columns=keys, events=table)


def rows_of(table: pa.Table, columns: tuple[str, ...] | list[str] | None = None) -> list[dict]:
    """Rows as dicts (optionally only some columns), for exact comparisons."""
    if columns is not None:
        table = table.select(list(columns))
    return table.to_pylist()


@dataclass
class MemoryLake:
    """The three layers of one table, applied as the sinks must apply a MilestonedTable."""

    keys: tuple[str, ...] = ("id",)
    changelog: list[dict] = field(default_factory=list)
    live: dict[tuple, dict] = field(default_factory=dict)
    forensic: list[dict] = field(default_factory=list)

    def key_of(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.keys)

    def apply(self, result: MilestonedTable) -> None:
        self.changelog += result.changelog.to_pylist()
        for row in result.live_deletes.to_pylist():
            self.live.pop(self.key_of(row), None)
        for row in result.live_upserts.to_pylist():
            self.live[self.key_of(row)] = row
        for close in result.forensic_closes.to_pylist():
            open_rows = [
                r
                for r in self.forensic
                if self.key_of(r) == self.key_of(close) and r[VALID_TO] is None
            ]
            assert len(open_rows) == 1, f"close of {close} matches {len(open_rows)} open rows"
            open_rows[0][VALID_TO] = close[VALID_TO]
            open_rows[0][BATCH_OUT] = close[BATCH_OUT]
        self.forensic += result.forensic_inserts.to_pylist()

    def current(self, keys: set[tuple] | None = None, schema: pa.Schema = SCHEMA) -> pa.Table:
        """The open forensic versions (of `keys`, or all), typed like the lake would be."""
        rows = [
            r
            for r in self.forensic
            if r[VALID_TO] is None and (keys is None or self.key_of(r) in keys)
        ]
        fields = [
            *schema,
            pa.field(VALID_FROM, UTC_US),
            pa.field(VALID_TO, UTC_US),
            pa.field(BATCH_IN, pa.int64()),
            pa.field(BATCH_OUT, pa.int64()),
            pa.field(OP, pa.string()),
            pa.field(POSITION, pa.string()),
        ]
        target = pa.schema(fields)
        return pa.Table.from_pylist([{f.name: r.get(f.name) for f in fields} for r in rows], target)

    def as_of(self, instant: datetime, columns: tuple[str, ...] = SOURCE) -> dict[tuple, dict]:
        """The forensic rows valid at `instant`, by key (asserting one per key)."""
        found: dict[tuple, dict] = {}
        for r in self.forensic:
            if r[VALID_FROM] <= instant and (r[VALID_TO] is None or instant < r[VALID_TO]):
                key = self.key_of(r)
                assert key not in found, f"two versions of {key} valid at {instant}"
                found[key] = {c: r[c] for c in columns}
        return found

    def live_rows(self, columns: tuple[str, ...] = SOURCE) -> dict[tuple, dict]:
        return {k: {c: r[c] for c in columns} for k, r in self.live.items()}

    def history(self, key: tuple, columns: tuple[str, ...] = SOURCE) -> list[tuple]:
        """One key's versions in order: (values..., valid_from, valid_to, batch_in, batch_out)."""
        versions = sorted(
            (r for r in self.forensic if self.key_of(r) == key), key=lambda r: r[POSITION]
        )
        return [
            (*(r[c] for c in columns), r[VALID_FROM], r[VALID_TO], r[BATCH_IN], r[BATCH_OUT])
            for r in versions
        ]


D = Decimal
INGESTED = datetime(2026, 3, 2, tzinfo=UTC)
ALICE = {"id": 1, "name": "Alice", "amount": D("10.00"), "note": "long text 1"}
BOB = {"id": 2, "name": "Bob", "amount": D("20.50"), "note": "long text 2"}
CARO = {"id": 3, "name": "Carö 🐙", "amount": D("-0.01"), "note": None}


def run(lake: MemoryLake, rows: list[dict], batch_id: int, *, keys=("id",), **kw):
    """One load: build events, look up current for their keys, milestone, apply."""
    table = events(rows)
    batch_keys = {tuple(r[k] for k in keys) for r in rows}
    result = milestone(
        changes(table, keys),
        lake.current(batch_keys),
        batch_id=batch_id,
        ingested_at=INGESTED,
        **kw,
    )
    lake.apply(result)
    return result

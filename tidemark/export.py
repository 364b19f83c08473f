"""`tidemark export --sample N --out DIR`: a few rows of every table and layer as JSON files.

An aid for building an API or a report against the lake before the data is there in
volume (the seeds' sample export): `DIR/<layer>/<table>.json` holds up to N rows of that
layer of that table, read through the consumer views (`tidemark query`'s: classified columns
masked, merge-on-read tables applied), as an indented JSON array of objects, one per row,
columns in table order. Values JSON has no type for are written as text: decimals as their
exact digits (`"12.50"`), dates and timestamps in ISO 8601 (`"2026-01-02T03:04:05.678901Z"`
for an instant), binary as lowercase hex, float NaN and infinities as `"NaN"`,
`"Infinity"`, `"-Infinity"`; lists and structs stay lists and objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tidemark.kernel.names import path_segment
from tidemark.query import connect, discover
from tidemark.sinks.views.masking import Masking


@dataclass(frozen=True)
class Exported:
    """One file written: its layer, table, rows and path."""

    layer: str
    table: str
    rows: int
    path: Path


def plain(value: Any) -> Any:
    """A value as JSON holds it (see the module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return str(value)


def export_sample(
    root: str,
    out: Path,
    *,
    rows: int,
    storage_options: Mapping[str, str] | None = None,
    masking: Masking | None = None,
    tables: Sequence[str] = (),
    layers: Sequence[str] = (),
) -> list[Exported]:
    """Write up to `rows` rows of each table (`tables`: only these lake tables) and layer
    (`layers`: only these) under `out`; returns what was written.

    Raises:
        UsageError: the lake holds no tables (or none readable yet).
    """
    found = [
        t
        for t in discover(root, storage_options=storage_options)
        if (not tables or t.name in tables) and (not layers or t.schema in layers)
    ]
    con = connect(root, storage_options=storage_options, tables=found, masking=masking)
    written = []
    for table in found:
        view = f'{table.schema}."{table.name.replace(chr(34), chr(34) * 2)}"'
        data = con.sql(f"SELECT * FROM {view} LIMIT {int(rows)}").to_arrow_table()
        records = [{k: plain(v) for k, v in row.items()} for row in data.to_pylist()]
        path = out / table.schema / f"{path_segment(table.name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
        written.append(Exported(table.schema, table.name, len(records), path))
    return written

"""Query results as text: a table folded to the terminal, one record per block, CSV, JSON.

A wide result printed as a plain table squeezes every column to `…` in an 80-column
terminal. Like DuckDB's own CLI, `table` shows the columns that fit, left to right, and
names the ones it left out under the table; `records` prints one `column: value` block per
row (psql's expanded display) for reading wide rows whole.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time
from decimal import Decimal
from typing import Literal

import pyarrow as pa

OutputFormat = Literal["table", "records", "csv", "json"]
MAX_CELL = 40
SEPARATOR = " | "


def jsonable(value: object) -> object:
    """A JSON-friendly form: decimals as text (exact), times in ISO 8601, bytes as hex."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _text(value: object) -> str:
    return "NULL" if value is None else str(jsonable(value))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def format_result(table: pa.Table, fmt: OutputFormat, *, width: int = 100) -> str:
    """Render a result; `width` is the terminal's, for `table`."""
    rows = table.to_pylist()
    if fmt == "json":
        return "\n".join(
            json.dumps({k: jsonable(v) for k, v in row.items()}, ensure_ascii=False) for row in rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow(["" if v is None else jsonable(v) for v in row.values()])
        return out.getvalue().rstrip("\n")
    if fmt == "records":
        return _records(table.column_names, rows)
    return _folded(table.column_names, rows, width)


def _records(names: list[str], rows: list[dict[str, object]]) -> str:
    pad = max((len(n) for n in names), default=0)
    blocks = []
    for index, row in enumerate(rows, 1):
        lines = [f"-[ record {index} ]" + "-" * max(0, pad - 8)]
        lines += [f"{name.ljust(pad)} | {_text(row[name])}" for name in names]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _folded(names: list[str], rows: list[dict[str, object]], width: int) -> str:
    cells = [[_clip(_text(row[n]), MAX_CELL) for n in names] for row in rows]
    widths = [
        max([len(_clip(n, MAX_CELL))] + [len(line[i]) for line in cells])
        for i, n in enumerate(names)
    ]
    shown: list[int] = []
    used = 0
    for index, w in enumerate(widths):
        extra = w + (len(SEPARATOR) if shown else 0)
        if shown and used + extra > width:
            break
        shown.append(index)
        used += extra
    if len(shown) == 1 and widths[shown[0]] > width:
        widths[shown[0]] = max(width, 8)
    head = SEPARATOR.join(_clip(names[i], widths[i]).ljust(widths[i]) for i in shown)
    rule = "-+-".join("-" * widths[i] for i in shown)
    body = [
        SEPARATOR.join(_clip(line[i], widths[i]).ljust(widths[i]) for i in shown) for line in cells
    ]
    out = [head, rule, *body]
    omitted = [names[i] for i in range(len(names)) if i not in shown]
    if omitted:
        out.append(
            f"({len(omitted)} more column{'s' if len(omitted) > 1 else ''} not shown: "
            f"{', '.join(omitted)}; --format records shows every column)"
        )
    return "\n".join(out)

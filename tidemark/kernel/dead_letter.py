"""A record that could not be decoded or applied (DESIGN §3.3 guarantee 5).

It lives next to the core's data types so the sinks can store dead letters without
importing `connectors/`. The raw key and value are kept verbatim for replay by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tidemark.kernel.columns import POSITION


@dataclass(frozen=True)
class DeadLetter:
    """One undecodable record.

    Attributes:
        table: lake table name when known (`<source>.<schema>.<table>`), else None.
        raw_key: the record key as received (JSON text), or None.
        raw_value: the record value as received (JSON text), or None.
        reason: one line: what failed, with the offending value in backticks.
        origin: where the record came from (e.g. `kafka:topic/partition@offset`).
        position: the source position when it could be read, else None.
    """

    table: str | None
    raw_key: str | None
    raw_value: str | None
    reason: str
    origin: str
    position: str | None


def _plain(kind: pa.DataType) -> pa.DataType:
    """A type whose values Python can always hold (dates and times as their integers)."""
    if pa.types.is_date32(kind) or pa.types.is_time32(kind):
        return pa.int32()
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind):
        return pa.int64()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(_plain(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _plain(f.type)) for f in kind])
    return kind


def safe_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of `table` as Python dicts, for a dead letter's raw value.

    A value Python cannot hold (a date beyond year 9999, an infinity's sentinel in Arrow's
    own range) must not stop the dead letter that reports it: such columns are written as
    their integers (days or time units since 1970).
    """
    try:
        rows: list[dict[str, Any]] = table.to_pylist()
    except (OverflowError, ValueError):
        columns = [
            column if _plain(column.type) == column.type else column.cast(_plain(column.type))
            for column in table.columns
        ]
        rows = pa.Table.from_arrays(columns, names=table.column_names).to_pylist()
    return rows


def dead_letters_of(
    table: str,
    key_columns: Sequence[str],
    rows: pa.Table,
    *,
    reason: str,
    origin: str,
) -> list[DeadLetter]:
    """One dead letter per row (a change event) of a table that cannot be applied.

    The row is kept whole as JSON (`raw_value`), its key columns as `raw_key`.
    """
    return [
        DeadLetter(
            table=table,
            raw_key=json.dumps({k: row.get(k) for k in key_columns}, default=str),
            raw_value=json.dumps(row, default=str, ensure_ascii=False),
            reason=reason,
            origin=origin,
            position=row.get(POSITION),
        )
        for row in safe_rows(rows)
    ]

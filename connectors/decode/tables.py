"""One source table's envelope schema, and the Arrow batch built from its events.

`TableLayout` is parsed once per (destination, schema text) and cached by the decoder.
`TableRows` collects the events of one batch as plain lists (one append per event) and
`build()` turns them into the §3.1 Arrow table column by column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tidemark.connectors.decode.rowkey import row_digests
from tidemark.connectors.decode.types import ColumnType, column_type
from tidemark.kernel import columns as tm

log = logging.getLogger(__name__)

_UNCHANGED_TYPE = pa.list_(pa.string())


@dataclass(frozen=True, eq=False)  # identity hash: used as a dict key per batch
class TableLayout:
    """The row-image fields of one table version, with their Arrow conversions.

    Attributes:
        table: lake table name `<source>.<schema>.<table>`.
        names: row-image column names in source order.
        types: one `ColumnType` per name.
        key_columns: the key (Debezium's message key, or the configured override).
        schema: the Arrow schema of the built batch (row image + `_tm_` columns).
        keyless: the table has no key (no primary key, no override): its key is `_tm_row`,
            a digest of the whole row image (connectors/decode/rowkey.py), and the decoder
            turns each update into a delete of the before image and a create of the after.
    """

    table: str
    names: tuple[str, ...]
    types: tuple[ColumnType, ...]
    key_columns: tuple[str, ...]
    schema: pa.Schema
    keyless: bool = False

    @classmethod
    def from_envelope(
        cls,
        table: str,
        envelope_schema: dict[str, Any],
        key_columns: tuple[str, ...],
        *,
        zoned_unit: str,
    ) -> TableLayout:
        """Read the `after` (row) struct of a Debezium envelope schema."""
        fields = {f["field"]: f for f in envelope_schema["fields"]}
        row = fields.get("after") or fields["before"]
        names = tuple(f["field"] for f in row["fields"])
        types = tuple(column_type(f, zoned_unit=zoned_unit) for f in row["fields"])
        keyless = not key_columns
        if keyless:
            log.info("table %s has no key: each row image is its own identity", table)
            key_columns = (tm.ROW,)
        missing = [k for k in key_columns if k not in names and not keyless]
        if missing:
            raise ValueError(f"key columns `{', '.join(missing)}` are not columns of `{table}`")
        image = [pa.field(n, t.arrow) for n, t in zip(names, types, strict=True)]
        schema = pa.schema(
            [
                *image,
                pa.field(tm.OP, pa.string()),
                pa.field(tm.POSITION, pa.string()),
                pa.field(tm.TX_ID, pa.string()),
                pa.field(tm.SOURCE_TS, pa.timestamp("us", tz="UTC")),
                pa.field(tm.BEFORE, pa.struct(image)),
                pa.field(tm.UNCHANGED_TOAST, _UNCHANGED_TYPE),
            ]
        )
        return cls(table, names, types, key_columns, schema, keyless)

    def fill_unchanged(self, after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        """`after` with each unchanged-TOAST placeholder replaced by the before image's value.

        A keyless table's update becomes a delete of the before image and a create of the
        after image; with `REPLICA IDENTITY FULL` the before image is complete, so the
        create gets the real value of a column the update did not touch.
        """
        filled = dict(after)
        for name, kind in zip(self.names, self.types, strict=True):
            value = after.get(name)
            if kind.placeholders and value is not None and value in kind.placeholders:
                filled[name] = before.get(name)
        return filled


@dataclass
class TableRows:
    """The events of one table (one layout) within one batch, in arrival order."""

    layout: TableLayout
    rows: list[list[Any]] = field(default_factory=list)
    befores: list[dict[str, Any] | None] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)
    tx_ids: list[str | None] = field(default_factory=list)
    source_ts: list[int | None] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)

    def add(
        self,
        row: dict[str, Any],
        before: dict[str, Any] | None,
        op: str,
        position: str,
        tx_id: str | None,
        source_ts: int | None,
        record: Any,
    ) -> None:
        self.rows.append([row.get(name) for name in self.layout.names])
        self.befores.append(before)
        self.ops.append(op)
        self.positions.append(position)
        self.tx_ids.append(tx_id)
        self.source_ts.append(source_ts)
        self.records.append(record)

    def build(self, finish: Callable[[pa.Table], pa.Table] | None = None) -> pa.Table:
        """The Arrow table (passed through `finish`, e.g. the Delta conversion); raises if any
        value cannot be converted or stored (see `split_bad`)."""
        layout = self.layout
        count = len(self.rows)
        columns = (
            [list(c) for c in zip(*self.rows, strict=True)] if count else [[] for _ in layout.names]
        )
        unchanged: list[list[str] | None] = [None] * count
        for name, kind, values in zip(layout.names, layout.types, columns, strict=True):
            if kind.placeholders and _clear_placeholders(kind, values):
                for i, v in enumerate(values):
                    if v is _TOASTED:
                        values[i] = None
                        unchanged[i] = [*(unchanged[i] or []), name]
        arrays = [kind.convert(values) for kind, values in zip(layout.types, columns, strict=True)]
        arrays += [
            pa.array(self.ops, type=pa.string()),
            pa.array(self.positions, type=pa.string()),
            pa.array(self.tx_ids, type=pa.string()),
            pa.array(self.source_ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            self._before_array(),
            pa.array(unchanged, type=_UNCHANGED_TYPE),
        ]
        table = pa.Table.from_arrays(arrays, schema=layout.schema)
        if any(a > b for a, b in zip(self.positions, self.positions[1:], strict=False)):
            table = table.sort_by(tm.POSITION)
        if finish is not None:
            table = finish(table)
        if layout.keyless:
            table = table.add_column(len(layout.names), tm.ROW, row_digests(table, layout.names))
        return table

    def _before_array(self) -> pa.Array:
        layout = self.layout
        struct_type = layout.schema.field(tm.BEFORE).type
        if all(b is None for b in self.befores):
            return pa.nulls(len(self.befores), type=struct_type)
        children = []
        for name, kind in zip(layout.names, layout.types, strict=True):
            values = [None if b is None else b.get(name) for b in self.befores]
            if kind.placeholders and _clear_placeholders(kind, values):
                values = [None if v is _TOASTED else v for v in values]
            children.append(kind.convert(values))
        mask = pa.array([b is None for b in self.befores], type=pa.bool_())
        return pa.StructArray.from_arrays(children, fields=list(struct_type), mask=mask)

    def split_bad(
        self, finish: Callable[[pa.Table], pa.Table] | None = None
    ) -> tuple[TableRows, list[tuple[Any, str, str]]]:
        """Find the events whose values do not convert: the rest, and (record, reason, position)."""
        good = TableRows(self.layout)
        bad: list[tuple[Any, str, str]] = []
        for i in range(len(self.rows)):
            one = TableRows(self.layout)
            one.add(
                dict(zip(self.layout.names, self.rows[i], strict=True)),
                self.befores[i],
                self.ops[i],
                self.positions[i],
                self.tx_ids[i],
                self.source_ts[i],
                self.records[i],
            )
            try:
                one.build(finish)
            except Exception as exc:  # any conversion failure isolates this event only
                bad.append((self.records[i], f"{type(exc).__name__}: {exc}", self.positions[i]))
                continue
            good.rows.append(one.rows[0])
            for attr in ("befores", "ops", "positions", "tx_ids", "source_ts", "records"):
                getattr(good, attr).append(getattr(one, attr)[0])
        return good, bad


_TOASTED = object()


def _clear_placeholders(kind: ColumnType, values: list[Any]) -> bool:
    """Replace placeholders by a marker in place; True when there was any.

    The containment checks run in C; the per-value loop only runs when one matched.
    """
    placeholders = kind.placeholders
    if not any(p in values for p in placeholders):
        return False
    for i, v in enumerate(values):
        if v is not None and v in placeholders:
            values[i] = _TOASTED
    return True

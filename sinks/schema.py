"""Schema evolution: fit a batch to a layer's Delta schema, or say why it cannot fit.

Rules (issue 4, part 4):
- a column new in the batch is added to the table (older rows read NULL);
- a column missing from the batch stays in the table and is written as NULL;
- a type change is applied when the values convert without loss (int32 -> int64, a wider
  decimal, string -> large string, another time zone for the same instant); anything else
  raises `SinkSchemaMismatch`, whose message becomes the dead-letter reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.model import MilestonedTable
from tidemark.sinks.errors import SinkSchemaMismatch

_FAMILIES: tuple[Callable[[pa.DataType], bool], ...] = (
    pa.types.is_integer,
    lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t),
    lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
    lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t),
    pa.types.is_boolean,
    pa.types.is_date,
    lambda t: pa.types.is_timestamp(t) and t.tz is not None,
    lambda t: pa.types.is_timestamp(t) and t.tz is None,
    pa.types.is_struct,
    lambda t: pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t),
    pa.types.is_map,
)


def _same_family(a: pa.DataType, b: pa.DataType) -> bool:
    return any(test(a) and test(b) for test in _FAMILIES) or (
        pa.types.is_integer(a) and (pa.types.is_floating(b) or pa.types.is_decimal(b))
    )


def _convert(column: pa.ChunkedArray, name: str, target: pa.DataType, uri: str) -> pa.ChunkedArray:
    source = column.type
    if source == target:
        return column
    if not _same_family(source, target):
        raise SinkSchemaMismatch(
            f"column `{name}` changed type from `{target}` to `{source}` in `{uri}`, "
            "which cannot widen",
            hint="add a new column at the source or rebuild the table",
            table=uri,
        )
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SinkSchemaMismatch(
            f"values of column `{name}` (`{source}`) do not fit the table type `{target}` "
            f"of `{uri}`: {exc}",
            hint="delta-rs cannot widen a column in place; rebuild the table",
            table=uri,
        ) from exc


def align(data: pa.Table, schema: pa.Schema | None, *, uri: str) -> tuple[pa.Table, bool]:
    """Return `data` laid out in the table's column order, and whether it adds columns.

    Raises:
        SinkSchemaMismatch: a column changed to a type the table cannot take.
    """
    if schema is None:
        # Delta reads every column back as nullable; match it now so a batch can be
        # concatenated with rows read back later (pyarrow refuses differing nullability).
        relaxed = pa.schema(
            [f.with_nullable(True) for f in data.schema], metadata=data.schema.metadata
        )
        return (data if relaxed == data.schema else data.cast(relaxed)), False
    names = set(data.column_names)
    columns: list[pa.ChunkedArray | pa.Array] = []
    fields: list[pa.Field] = []
    for field in schema:
        if field.name in names:
            columns.append(_convert(data.column(field.name), field.name, field.type, uri))
        else:
            columns.append(pa.nulls(data.num_rows, field.type))
        fields.append(pa.field(field.name, field.type, nullable=True))
    known = set(schema.names)
    added = [data.schema.field(name) for name in data.column_names if name not in known]
    for field in added:
        columns.append(data.column(field.name))
        fields.append(field.with_nullable(True))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)), bool(added)


def _relax(table: pa.Table) -> pa.Table:
    fields = [f.with_nullable(True) for f in table.schema]
    if all(a.nullable for a in table.schema):
        return table
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def all_nullable(result: MilestonedTable) -> MilestonedTable:
    """Every output column nullable, as the lake's tables are.

    The core marks some `_tm_` columns NOT NULL; the sinks concatenate new rows with rows
    read back from Delta (all nullable) and pyarrow refuses to mix the two.
    """
    return dataclasses.replace(
        result,
        changelog=_relax(result.changelog),
        live_upserts=_relax(result.live_upserts),
        live_deletes=_relax(result.live_deletes),
        forensic_inserts=_relax(result.forensic_inserts),
        forensic_closes=_relax(result.forensic_closes),
    )

"""Rename or widen a column of a lake table by rewriting its layers.

delta-rs 1.6 can neither rename nor widen a column in place, and the way Delta renames
without a rewrite (column mapping, mode `name`) is not an option: a table that delta-rs 1.6
creates with column mapping reads back as NULLs after its own writes (docs/schema-changes.md).
So each layer is streamed through the change (top-level column and the same field of the
`_tm_before` struct) and written back as one overwrite commit, stamped like every other
commit (txn and position), so a replayed change is skipped. Memory holds one record batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import BEFORE
from tidemark.sinks.delta.table import DeltaHandle
from tidemark.sinks.readers import has_deletion_vectors, read_table

log = logging.getLogger(__name__)

Convert = Callable[[pa.Array], pa.Array]


@dataclass(frozen=True)
class ColumnChange:
    """What happens to one column.

    Attributes:
        column: its name before the change.
        rename_to: its new name, if renamed.
        to_type: its new Arrow type, if widened.
        convert: how values reach `to_type` (default: a safe cast).
    """

    column: str
    rename_to: str | None = None
    to_type: pa.DataType | None = None
    convert: Convert | None = None

    @property
    def name(self) -> str:
        return self.rename_to or self.column

    def values(self, array: pa.Array) -> pa.Array:
        if self.to_type is None or array.type == self.to_type:
            return array
        if self.convert is not None:
            return self.convert(array)
        return pc.cast(array, self.to_type, safe=True)


def _field(field: pa.Field, change: ColumnChange) -> pa.Field:
    if field.name == change.column:
        return pa.field(change.name, change.to_type or field.type, nullable=True)
    if field.name == BEFORE and pa.types.is_struct(field.type):
        children = [_field(child, change) for child in field.type]
        return pa.field(field.name, pa.struct(children), nullable=True)
    return field


def changed_schema(schema: pa.Schema, change: ColumnChange) -> pa.Schema:
    """`schema` with the change applied (also inside `_tm_before`)."""
    return pa.schema([_field(f, change) for f in schema], metadata=schema.metadata)


def _column(array: pa.Array, field: pa.Field, change: ColumnChange) -> pa.Array:
    if field.name == change.column:
        return change.values(array)
    if field.name == BEFORE and pa.types.is_struct(field.type):
        struct = array.cast(field.type) if array.type != field.type else array
        assert isinstance(struct, pa.StructArray)
        children = [_column(struct.field(i), child, change) for i, child in enumerate(field.type)]
        fields = [_field(child, change) for child in field.type]
        return pa.StructArray.from_arrays(children, fields=fields, mask=struct.is_null())
    return array


def apply_change(table: pa.Table, change: ColumnChange) -> pa.Table:
    """One table's rows with the change applied."""
    arrays = [
        _column(table.column(i).combine_chunks(), field, change)
        for i, field in enumerate(table.schema)
    ]
    return pa.Table.from_arrays(arrays, schema=changed_schema(table.schema, change))


def has_column(schema: pa.Schema | None, column: str) -> bool:
    """True when `column` is a top-level column (or a `_tm_before` field) of `schema`."""
    if schema is None:
        return False
    if column in schema.names:
        return True
    if BEFORE in schema.names and pa.types.is_struct(schema.field(BEFORE).type):
        return any(child.name == column for child in schema.field(BEFORE).type)
    return False


def rewrite(
    handle: DeltaHandle,
    change: ColumnChange,
    *,
    batch_id: int,
    position: str,
    finish: Callable[[pa.Table], pa.Table] | None = None,
) -> int:
    """Rewrite the table of `handle` with `change`; returns the rows written.

    Skipped (0) when the table is absent, lacks the column, already has the new name and
    type, or already holds `position` (a replay). `finish` may adjust each rewritten piece
    (e.g. recompute `_tm_bucket`).

    Raises:
        SinkError: storage failed (nothing changed: the overwrite is one commit).
        pa.ArrowInvalid: a value does not convert (the caller refuses the change).
    """
    handle.refresh()
    applied = handle.applied_position()
    if handle.dt is None or not has_column(handle.schema, change.column):
        return 0
    if applied is not None and position <= applied:
        return 0
    assert handle.schema is not None
    target = changed_schema(handle.schema, change)
    if target == handle.schema:
        return 0  # nothing to rewrite (e.g. varchar(n) to text: both are strings)
    written = 0

    # Listed before the write starts: the write consumes `pieces` inside delta-rs's runtime,
    # where calling delta-rs again panics ("Cannot start a runtime from within a runtime").
    # A merge-on-read table (deletion vectors) cannot be a pyarrow dataset: it is read whole
    # through delta-rs first (a rename or widening is rare; memory holds the table then).
    source: Iterable[pa.RecordBatch]
    if has_deletion_vectors(handle.dt):
        source = read_table(handle.dt).to_batches()
    else:
        source = handle.dt.to_pyarrow_dataset().to_batches()

    def pieces() -> Iterator[pa.RecordBatch]:
        nonlocal written
        for batch in source:
            table = apply_change(pa.Table.from_batches([batch]), change)
            if finish is not None:
                table = finish(table)
            written += table.num_rows
            yield from table.select(target.names).cast(target).to_batches()

    handle.overwrite(
        pa.RecordBatchReader.from_batches(target, pieces()), batch_id=batch_id, position=position
    )
    log.info("rewrote %s: %s (%d rows)", handle.uri, change, written)
    return written

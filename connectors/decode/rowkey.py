"""The identity of a row in a table without a key: a digest of the whole row image.

A table with `REPLICA IDENTITY FULL` and no primary key can hold identical rows, and any
column may be NULL, a list or a float NaN, which Arrow's joins and sorts cannot use as a
key. The decoder therefore gives such a table one key column, `_tm_row`: the BLAKE2b-128
digest (hex) of the row's non-NULL values, each with its column name, in name order, as the
lake stores them. Equal rows get equal digests (so a delete finds the row its insert made),
and a column added later with NULLs leaves old digests unchanged. The core counts identical
rows (`_tm_count`, docs/milestoning.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa


def _plain(kind: pa.DataType) -> pa.DataType:
    """The type whose Python values are exact and never out of Python's range."""
    if pa.types.is_date32(kind) or pa.types.is_time32(kind):
        return pa.int32()
    if (
        pa.types.is_date64(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_time64(kind)
        or pa.types.is_duration(kind)
    ):
        return pa.int64()
    if pa.types.is_list(kind):
        return pa.list_(_plain(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(_plain(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _plain(f.type)) for f in kind])
    return kind


def row_digests(table: pa.Table, names: Sequence[str]) -> pa.Array:
    """The `_tm_row` of each row of `table`, over the columns `names`."""
    columns = []
    for name in sorted(names):
        column = table.column(name)
        plain = _plain(column.type)
        values = (column if plain == column.type else column.cast(plain)).to_pylist()
        columns.append((name, values))
    digests = []
    for i in range(table.num_rows):
        text = "\x1f".join(
            f"{name}={values[i]!r}" for name, values in columns if values[i] is not None
        )
        digests.append(hashlib.blake2b(text.encode(), digest_size=16).hexdigest())
    return pa.array(digests, type=pa.string())

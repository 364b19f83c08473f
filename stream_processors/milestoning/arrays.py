"""Small vectorised building blocks over Arrow arrays: shifts, null-aware equality, ranges.

The core does not loop over rows in Python; everything it does is phrased with these helpers
and `pyarrow.compute` kernels, which run in C++ over whole columns (the rare exceptions check
vectorised first and walk only when a row needs it).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def flat(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array, so slicing and concatenation line rows up exactly."""
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        return column.combine_chunks()
    return column


def shift_down(array: pa.Array) -> pa.Array:
    """Row i holds row i-1 (NULL first): each row sees its predecessor."""
    n = len(array)
    if n == 0:
        return array
    return pa.concat_arrays([pa.nulls(1, array.type), array.slice(0, n - 1)])


def shift_up(array: pa.Array) -> pa.Array:
    """Row i holds row i+1 (NULL last): each row sees its successor."""
    n = len(array)
    if n == 0:
        return array
    return pa.concat_arrays([array.slice(1), pa.nulls(1, array.type)])


def row_index(n: int) -> pa.Array:
    """0..n-1 as int64 (no numpy needed)."""
    if n == 0:
        return pa.array([], pa.int64())
    return pc.subtract(pc.cumulative_sum(pa.repeat(1, n).cast(pa.int64())), 1)


def _storage(array: pa.Array) -> pa.Array:
    return array.storage if isinstance(array.type, pa.ExtensionType) else array


def same_values(left: pa.Array, right: pa.Array) -> pa.BooleanArray | None:
    """Row-wise "is the same value", NULL == NULL and NaN == NaN; never NULL itself.

    Returns None when Arrow has no comparison kernel for the type (lists, structs, maps);
    callers then compare the few rows that matter in Python (see `same_values_slow`).
    """
    left, right = _storage(left), _storage(right)
    try:
        equal = pc.equal(left, right)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    result = pc.or_(pc.fill_null(equal, False), pc.and_(pc.is_null(left), pc.is_null(right)))
    if pa.types.is_floating(left.type):
        both_nan = pc.and_(pc.is_nan(left), pc.is_nan(right))
        result = pc.or_(result, pc.fill_null(both_nan, False))
    return result


def same_values_slow(left: pa.Array, right: pa.Array, rows: pa.Array) -> set[int]:
    """The subset of `rows` where left and right hold the same (nested) value.

    Only used for types without a comparison kernel, and only over rows that are already
    candidates, which keeps the Python loop to the rare rows that need it.
    """
    same: set[int] = set()
    for i in rows.to_pylist():
        if left[i].as_py() == right[i].as_py():
            same.add(i)
    return same


def starts_of_runs(columns: list[pa.Array]) -> pa.BooleanArray:
    """True where a row's values (all `columns`) differ from the previous row's.

    With the rows sorted by those columns, this marks the first row of each group.
    """
    n = len(columns[0]) if columns else 0
    if n == 0:
        return pa.array([], pa.bool_())
    same_as_prev = None
    for column in columns:
        prev = shift_down(column)
        same = same_values(column, prev)
        if same is None:
            candidates = row_index(n)
            keep = same_values_slow(column, prev, candidates)
            same = pa.array([i in keep for i in range(n)], pa.bool_())
        same_as_prev = same if same_as_prev is None else pc.and_(same_as_prev, same)
    assert same_as_prev is not None
    # Row 0 always starts a group (its "previous" is the NULL pad, which may look equal).
    first = pa.concat_arrays([pa.array([True]), pa.repeat(False, n - 1).cast(pa.bool_())])
    return pc.or_(pc.invert(same_as_prev), first)


def group_starts(starts: pa.BooleanArray) -> pa.Array:
    """For each row, the index of the first row of its group."""
    index = row_index(len(starts))
    return pc.cumulative_max(pc.if_else(starts, index, 0))


def group_ids(starts: pa.BooleanArray) -> pa.Array:
    """For each row, a dense 0-based group number."""
    return pc.subtract(pc.cumulative_sum(starts.cast(pa.int64())), 1)


def ends_of_runs(starts: pa.BooleanArray) -> pa.BooleanArray:
    """True on the last row of each group (the row before the next start, and the last row)."""
    n = len(starts)
    if n == 0:
        return starts
    return pc.fill_null(shift_up(starts), True)


def running_max_per_run(values: pa.Array, starts: pa.BooleanArray) -> pa.Array:
    """Each value raised to the largest value before it in its run (runs begin at `starts`).

    Source order and source time almost always agree, so the vectorised check returns the
    input untouched; only a run that goes back in time is walked in Python.
    """
    if len(values) < 2:
        return values
    previous = shift_down(values)
    goes_back = pc.and_(pc.invert(starts), pc.fill_null(pc.less(values, previous), False))
    if not pc.any(goes_back).as_py():
        return values
    items = values.to_pylist()
    first = starts.to_pylist()
    highest = None
    for index, value in enumerate(items):
        if first[index]:
            highest = value
        elif value is None:
            continue
        elif highest is not None and value < highest:
            items[index] = highest
        else:
            highest = value
    return pa.array(items, type=values.type)

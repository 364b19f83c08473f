"""Where each key of a merge-on-read layer lives: (file, row) among rows not yet deleted.

A batch must find the rows it replaces without reading whole tables. The writer keeps an
index: the key columns of every live file, each row tagged with its location
`file number << 32 | row`. Built once from the files' key columns, then kept in step with
every commit (ours: the keys we append and the rows we delete; others': the key columns of
the files they add, and the DVs and removes they commit). A compaction moves rows: its
removes drop the old files' entries and its new files are read like any other.

Deleting is lazy: a deleted location goes into a bitmap, and lookups drop the entries it
holds. When they make up a quarter of the index, the index is filtered once.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap64

LOC = "_tm_loc"
_ROW_BITS = 32
_ROW_MASK = (1 << _ROW_BITS) - 1


class KeyIndex:
    """key -> location for the rows of a set of files.

    Args:
        key_columns: the key columns.
        key_schema: their types (every file's keys are cast to them).
    """

    def __init__(self, key_columns: Sequence[str], key_schema: pa.Schema) -> None:
        self.key_columns = list(key_columns)
        self.schema = pa.schema([key_schema.field(k).with_nullable(True) for k in key_columns])
        self._parts: list[pa.Table] = []
        self._stale = BitMap64()
        self._numbers: dict[str, int] = {}
        self._paths: dict[int, str] = {}
        self._sizes: dict[int, int] = {}
        self._filtered: dict[int, int] = {}
        """Per file, its entries the index no longer holds (filtered out while stale)."""
        self._next = 0
        self._entries = 0

    def __len__(self) -> int:
        """Entries that are still live."""
        return self._entries - len(self._stale)

    def files(self) -> set[str]:
        return set(self._numbers)

    def add_file(self, path: str, keys: pa.Table, deleted: BitMap64 | None = None) -> None:
        """Index every row of a new live file (`keys` in file order); `deleted` rows drop."""
        number = self._next
        self._next += 1
        self._numbers[path] = number
        self._paths[number] = path
        self._sizes[number] = keys.num_rows
        base = number << _ROW_BITS
        locs = positions(base, keys.num_rows)
        part = keys.select(self.key_columns).cast(self.schema).append_column(LOC, locs)
        self._parts.append(part)
        self._entries += keys.num_rows
        if deleted:
            self.delete(path, deleted)

    def delete(self, path: str, rows: BitMap64) -> None:
        """Rows of `path` deleted (a DV grew)."""
        number = self._numbers.get(path)
        if number is None:
            return
        base = number << _ROW_BITS
        self._stale |= BitMap64(base + r for r in rows)
        self._maybe_compact()

    def drop_file(self, path: str) -> None:
        """`path` is no longer live (a compaction or a whole-file delete)."""
        number = self._numbers.pop(path, None)
        if number is None:
            return
        del self._paths[number]
        base = number << _ROW_BITS
        # The whole file goes stale, entries filtered out before included: count those in.
        self._entries += self._filtered.pop(number, 0)
        self._stale.add_range(base, base + self._sizes.pop(number))
        self._maybe_compact()

    def locate(self, keys: pa.Table) -> pa.Table:
        """The live entries of `keys`: key columns, `path` (string) and `row` (int64)."""
        empty = pa.table(
            {
                **{k: pa.array([], self.schema.field(k).type) for k in self.key_columns},
                "path": pa.array([], pa.string()),
                "row": pa.array([], pa.int64()),
            }
        )
        if not self._parts or keys.num_rows == 0:
            return empty
        wanted = keys.select(self.key_columns).cast(self.schema)
        wanted = wanted.group_by(self.key_columns).aggregate([])
        index = pa.concat_tables(self._parts)
        found = index.join(wanted, self.key_columns, join_type="inner")
        if found.num_rows == 0:
            return empty
        locs = found.column(LOC)
        if self._stale:
            hit = BitMap64(locs.to_pylist()) & self._stale
            if hit:
                keep = pc.invert(pc.is_in(locs, value_set=pa.array(list(hit), pa.int64())))
                found = found.filter(keep)
                locs = found.column(LOC)
        numbers = pc.shift_right(locs, _ROW_BITS).to_pylist()
        rows = pc.bit_wise_and(locs, pa.scalar(_ROW_MASK, pa.int64()))
        paths = pa.array([self._paths[n] for n in numbers], pa.string())
        return (
            found.select(self.key_columns).append_column("path", paths).append_column("row", rows)
        )

    def _maybe_compact(self) -> None:
        if len(self._stale) * 4 < max(self._entries, 1) or len(self._stale) < 10_000:
            return
        stale = int64s(self._stale.to_array())
        files = pc.value_counts(pc.shift_right(stale, _ROW_BITS)).to_pylist()
        for item in files:  # a dropped file's range may be stale too: it is gone already
            if item["values"] in self._sizes:
                number = item["values"]
                self._filtered[number] = self._filtered.get(number, 0) + item["counts"]
        # One lookup over the whole index: `is_in` builds its set of the stale locations on
        # every call, and one call per part (a part per batch file) made that hundreds of
        # builds: a 5 s pause of the writer after a compaction round removed 48 files.
        table = pa.concat_tables(self._parts).combine_chunks()
        table = table.filter(pc.invert(pc.is_in(table.column(LOC), value_set=stale)))
        self._parts = [table] if table.num_rows else []
        self._entries = table.num_rows
        self._stale = BitMap64()


def positions(start: int, count: int) -> pa.Array:
    """int64 `start, start + 1, ...` (`count` of them), built by Arrow kernels: a Python
    `range` of a million ints costs a tenth of a second or more."""
    if count == 0:
        return pa.array([], pa.int64())
    ones = pa.repeat(pa.scalar(1, pa.int64()), count)
    return pc.add(pc.cumulative_sum(ones), pa.scalar(start - 1, pa.int64()))


def int64s(values: array[int]) -> pa.Array:
    """An int64 Arrow array over a Python `array` of 8-byte integers, without a copy per
    element (building one from a `range` of a million ints costs a tenth of a second)."""
    buffer = pa.py_buffer(values)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, buffer])


def locations(found: pa.Table) -> dict[str, BitMap64]:
    """`locate`'s answer as path -> rows."""
    if found.num_rows == 0:
        return {}
    grouped = found.select(["path", "row"]).group_by("path").aggregate([("row", "list")])
    return {
        path: BitMap64(rows)
        for path, rows in zip(
            grouped.column("path").to_pylist(), grouped.column("row_list").to_pylist(), strict=True
        )
    }

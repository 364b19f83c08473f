"""Rows of a bucketed layer, per bucket: read once, then kept in a bounded cache.

Live and forensic rewrite whole buckets, so each commit knows the exact new content of the
buckets it touched; keeping it means the next batch (and `current_versions`) reads nothing
from storage for hot buckets. One LRU bounded by bytes serves every live and forensic layer
of a lake, so memory stays flat however big the tables grow and however many there are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import BUCKET
from tidemark.sinks.delta.table import DeltaHandle

# Shared by all layers of a lake: about 1M rows of a narrow table's live and forensic layers,
# so a hot set that size (or a table that size with keys spread evenly) is rewritten without
# reading it back. docs/pipeline.md ("Memory") has the whole budget.
DEFAULT_CACHE_BYTES = 256 * 2**20


class BucketCache:
    """The rows of recently written or read buckets, least recently used evicted first.

    Keys are (layer, bucket) with a layer token from `layer()`. Layers of different tables
    commit on different threads, hence the lock.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._buckets: dict[int, set[int]] = {}
        self._bytes = 0
        self._layers = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def layer(self) -> int:
        """A token for one more layer's entries."""
        with self._lock:
            self._layers += 1
            self._buckets[self._layers] = set()
            return self._layers

    def get(self, layer: int, bucket: int) -> pa.Table | None:
        with self._lock:
            rows = self._entries.get((layer, bucket))
            if rows is not None:
                self._entries.move_to_end((layer, bucket))
            return rows

    def put(self, layer: int, bucket: int, rows: pa.Table) -> None:
        rows = compact(rows)
        with self._lock:
            self._pop(layer, bucket)
            self._entries[(layer, bucket)] = rows
            self._buckets[layer].add(bucket)
            self._bytes += rows.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                (old_layer, old_bucket), _ = next(iter(self._entries.items()))
                self._pop(old_layer, old_bucket)

    def drop(self, layer: int, buckets: Iterable[int]) -> None:
        with self._lock:
            for bucket in buckets:
                self._pop(layer, bucket)

    def clear(self, layer: int) -> None:
        with self._lock:
            for bucket in list(self._buckets.get(layer, ())):
                self._pop(layer, bucket)

    def _pop(self, layer: int, bucket: int) -> None:
        rows = self._entries.pop((layer, bucket), None)
        if rows is not None:
            self._bytes -= rows.nbytes
            self._buckets[layer].discard(bucket)


def compact(rows: pa.Table) -> pa.Table:
    """`rows` in buffers of their own when they hold on to much more than they use.

    A bucket's content is often a slice of something bigger (a whole batch, a read of many
    buckets), and a slice keeps its parent's buffers alive: a cache bounded by `nbytes`
    would not see them, and kept entries pinned whole batches (arming 10M rows by snapshot
    grew by 400 MB).
    """
    if rows.get_total_buffer_size() <= 2 * rows.nbytes + 65_536:
        return rows
    if rows.num_rows == 0:
        return rows.schema.empty_table()
    columns = [pa.concat_arrays(column.chunks) for column in rows.columns]
    return pa.Table.from_arrays(columns, schema=rows.schema)


def split_by_bucket(table: pa.Table) -> dict[int, pa.Table]:
    """`table` split on its `_tm_bucket` column.

    Rows already in bucket order are sliced without being copied: a table read in its
    physical order often has its keys, and so its range buckets, ascending.
    """
    if table.num_rows == 0:
        return {}
    buckets = table.column(BUCKET)
    n = table.num_rows
    ascending = pc.all(pc.greater_equal(buckets.slice(1), buckets.slice(0, n - 1))).as_py()
    ordered = table if ascending in (True, None) else table.take(pc.sort_indices(buckets))
    counts = pc.value_counts(ordered.column(BUCKET))
    parts: dict[int, pa.Table] = {}
    offset = 0
    for entry in counts.to_pylist():
        parts[int(entry["values"])] = ordered.slice(offset, entry["counts"])
        offset += entry["counts"]
    return parts


_LEFT, _RIGHT = "__tm_left_row", "__tm_right_row"


def _keys_as(keys: pa.Table, table: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """The key columns of `keys` in the types `table` has them (binary read back from Delta
    meets large_binary from the decoder; Arrow's join wants them identical)."""
    return pa.table(
        {name: pc.cast(keys.column(name), table.schema.field(name).type) for name in key_columns}
    )


def _numbered(table: pa.Table, key_columns: Sequence[str], name: str) -> pa.Table:
    """The key columns of `table` and each row's number: what a join may carry.

    Arrow's hash join refuses nested payload (lists, structs, maps: "not supported in join
    non-key field"), so joins here see keys and row numbers only, and rows are fetched
    afterwards with `take`.
    """
    n = table.num_rows
    rows = pc.subtract(pc.cumulative_sum(pa.repeat(1, n).cast(pa.int64())), 1) if n else None
    return table.select(list(key_columns)).append_column(
        name, rows if rows is not None else pa.array([], pa.int64())
    )


def join_rows(
    left: pa.Table, right: pa.Table, key_columns: Sequence[str]
) -> tuple[pa.Array, pa.Array]:
    """Row numbers (left, right) of the pairs of rows with equal keys (an inner join)."""
    right = _keys_as(right, left, key_columns)
    joined = _numbered(left, key_columns, _LEFT).join(
        _numbered(right, key_columns, _RIGHT), list(key_columns), join_type="inner"
    )
    return (
        joined.column(_LEFT).combine_chunks(),
        joined.column(_RIGHT).combine_chunks(),
    )


def key_filter(
    table: pa.Table, keys: pa.Table, key_columns: Sequence[str], *, keep: bool
) -> pa.Table:
    """Rows of `table` whose key is in `keys` (keep=True) or not in it (keep=False)."""
    if table.num_rows == 0 or keys.num_rows == 0:
        return table if not keep else table.slice(0, 0)
    if len(key_columns) == 1:
        name = key_columns[0]
        values = pc.cast(keys.column(name), table.schema.field(name).type)
        mask = pc.is_in(table.column(name), value_set=values.combine_chunks())
        return table.filter(mask if keep else pc.invert(mask))
    right = _keys_as(keys, table, key_columns).group_by(list(key_columns)).aggregate([])
    numbered = _numbered(table, key_columns, _LEFT)
    hit = numbered.join(right, list(key_columns), join_type="left semi").column(_LEFT)
    mask = pc.is_in(numbered.column(_LEFT), value_set=hit.combine_chunks())
    return table.filter(mask if keep else pc.invert(mask))


class BucketRows:
    """Reads a layer's rows by bucket through the lake's bucket cache.

    Args:
        handle: the layer's Delta table.
        scope: extra partition filters for what is cached (forensic: `_tm_current = true`).
        cache: the cache shared with the lake's other layers (default: one of its own).
    """

    def __init__(
        self,
        handle: DeltaHandle,
        *,
        scope: Sequence[tuple[str, str, str]] = (),
        cache: BucketCache | None = None,
    ) -> None:
        self.handle = handle
        self.scope = list(scope)
        self.cache = cache if cache is not None else BucketCache()
        self._layer = self.cache.layer()

    def get(self, buckets: Iterable[int], *, remember: bool = True) -> dict[int, pa.Table]:
        """The rows of each bucket (empty table for an empty bucket); misses read together
        and cached unless `remember` is False (the caller is about to replace them)."""
        found: dict[int, pa.Table] = {}
        missing: list[int] = []
        for bucket in sorted(set(buckets)):
            rows = self.cache.get(self._layer, bucket)
            if rows is not None:
                found[bucket] = rows
            else:
                missing.append(bucket)
        if missing and self.handle.dt is not None:
            partitions = [(BUCKET, "in", [str(b) for b in missing]), *self.scope]
            rows = self.handle.read(partitions=partitions)
            parts = split_by_bucket(rows)
            for bucket in missing:
                found[bucket] = parts.get(bucket, rows.slice(0, 0))
                if remember:
                    self.put(bucket, found[bucket])
        return found

    def put(self, bucket: int, rows: pa.Table) -> None:
        """Remember the committed content of `bucket`."""
        self.cache.put(self._layer, bucket, rows)

    def drop(self, buckets: Iterable[int]) -> None:
        self.cache.drop(self._layer, buckets)

    def clear(self) -> None:
        self.cache.clear(self._layer)

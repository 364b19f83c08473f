"""Rows of a bucketed layer, per bucket: read once, then kept in a bounded cache.

Live and forensic rewrite whole buckets, so each commit knows the exact new content of the
buckets it touched; keeping it means the next batch (and `current_versions`) reads nothing
from storage for hot buckets. The cache is an LRU bounded by bytes, so memory stays flat
however big the table grows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from sinks.delta.table import DeltaHandle
from stream_processors.milestoning.columns import BUCKET

# Per layer and table: 1M rows of a narrow table fit, so a table of that size with keys
# spread evenly (every batch touches every bucket) is rewritten without reading it back.
DEFAULT_CACHE_BYTES = 256 * 2**20


def split_by_bucket(table: pa.Table) -> dict[int, pa.Table]:
    """`table` split on its `_tm_bucket` column."""
    if table.num_rows == 0:
        return {}
    ordered = table.take(pc.sort_indices(table.column(BUCKET)))
    counts = pc.value_counts(ordered.column(BUCKET))
    parts: dict[int, pa.Table] = {}
    offset = 0
    for entry in counts.to_pylist():
        parts[int(entry["values"])] = ordered.slice(offset, entry["counts"])
        offset += entry["counts"]
    return parts


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
    right = keys.select(list(key_columns)).group_by(list(key_columns)).aggregate([])
    return table.join(right, list(key_columns), join_type="left semi" if keep else "left anti")


class BucketRows:
    """Reads a layer's rows by bucket through an LRU cache.

    Args:
        handle: the layer's Delta table.
        scope: extra partition filters for what is cached (forensic: `_tm_current = true`).
        max_bytes: cache bound in bytes (Arrow buffer sizes).
    """

    def __init__(
        self,
        handle: DeltaHandle,
        *,
        scope: Sequence[tuple[str, str, str]] = (),
        max_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.handle = handle
        self.scope = list(scope)
        self.max_bytes = max_bytes
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._bytes = 0

    def get(self, buckets: Iterable[int]) -> dict[int, pa.Table]:
        """The rows of each bucket (empty table for an empty bucket); misses read together."""
        wanted = sorted(set(buckets))
        found: dict[int, pa.Table] = {}
        missing: list[int] = []
        for bucket in wanted:
            if bucket in self._cache:
                self._cache.move_to_end(bucket)
                found[bucket] = self._cache[bucket]
            else:
                missing.append(bucket)
        if missing and self.handle.dt is not None:
            partitions = [(BUCKET, "in", [str(b) for b in missing]), *self.scope]
            rows = self.handle.read(partitions=partitions)
            parts = split_by_bucket(rows)
            for bucket in missing:
                found[bucket] = parts.get(bucket, rows.slice(0, 0))
                self.put(bucket, found[bucket])
        return found

    def put(self, bucket: int, rows: pa.Table) -> None:
        """Remember the committed content of `bucket`, evicting the least recently used."""
        self.drop([bucket])
        self._cache[bucket] = rows
        self._bytes += rows.nbytes
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._bytes -= evicted.nbytes

    def drop(self, buckets: Iterable[int]) -> None:
        for bucket in buckets:
            evicted = self._cache.pop(bucket, None)
            if evicted is not None:
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        self._cache.clear()
        self._bytes = 0

"""Key buckets: how live and forensic rows are spread over partitions.

A MERGE in delta-rs rewrites every file whose key range it touches, so its cost grows
with the table. We partition live and forensic by `_tm_bucket` instead: a batch reads and
replaces only the buckets its keys fall in. With one integer key the bucket is a key range
(`key // size`), so the recent keys that change most share a few buckets and a commit's cost
tracks the hot set, not the table. Other keys hash into a fixed number of buckets.

The bucketing is fixed when a table is created and stored in its Delta description, because
every later read must find a key's rows in the same bucket.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_RANGE_SIZE = 16_384
DEFAULT_HASH_BUCKETS = 64
PARTITION_STRIDE = 1_000_000
"""`partition` buckets are `kafka_partition * PARTITION_STRIDE + inner bucket`."""


@dataclass(frozen=True)
class Bucketing:
    """Maps key values to bucket numbers.

    Attributes:
        kind: `range` (one integer key, `key // size`) or `hash` (crc32 of the key, mod size).
        size: keys per bucket for `range`; number of buckets for `hash`.
    """

    kind: Literal["range", "hash", "partition"]
    size: int
    inner: Literal["range", "hash"] | None = None
    partition: int | None = field(default=None, compare=False)
    partition_of: Callable[[pa.Table, Sequence[str]], pa.Array] | None = field(
        default=None, compare=False
    )
    """Per-row Kafka partition of `keys` (one commit holding several partitions' rows)."""

    @classmethod
    def for_keys(
        cls,
        schema: pa.Schema,
        key_columns: Sequence[str],
        *,
        range_size: int = DEFAULT_RANGE_SIZE,
        hash_buckets: int = DEFAULT_HASH_BUCKETS,
    ) -> Bucketing:
        """Range buckets for a single integer key, hash buckets otherwise."""
        if len(key_columns) == 1 and pa.types.is_integer(schema.field(key_columns[0]).type):
            return cls("range", range_size)
        return cls("hash", hash_buckets)

    def by_partition(self, partition: int) -> Bucketing:
        """This layout inside one Kafka partition's own buckets (distributed runtime).

        Writers of different partitions then never share a bucket: no commit conflicts and
        no stale caches. Debezium keys records by primary key, so a key stays in one
        partition while the topic's partition count does not change. The partition number
        is not stored in the table: each writer pins its own (`kind` is stored).
        """
        if self.kind == "partition":
            return replace(self, partition=partition, partition_of=None)
        return Bucketing("partition", self.size, self.kind, partition)

    def by_partitions(
        self, partition_of: Callable[[pa.Table, Sequence[str]], pa.Array]
    ) -> Bucketing:
        """Like `by_partition`, each row in the buckets of its own partition, told by
        `partition_of(keys, key_columns)` (int64 per row)."""
        inner = self.inner if self.kind == "partition" else self.kind
        return Bucketing("partition", self.size, inner, None, partition_of)

    def assign(self, keys: pa.Table, key_columns: Sequence[str]) -> pa.Array:
        """The bucket (int64) of each row of `keys`."""
        if self.kind == "partition" and self.partition_of is not None and self.inner:
            inner = Bucketing(self.inner, self.size).assign(keys, key_columns)
            parts = pc.cast(self.partition_of(keys, key_columns), pa.int64())
            return pc.add(inner, pc.multiply(parts, pa.scalar(PARTITION_STRIDE, pa.int64())))
        if self.kind == "partition":
            if self.partition is None or self.inner is None:
                raise ValueError(
                    "a table bucketed by Kafka partition is written only by the "
                    "distributed runtime, which pins the partition"
                )
            inner = Bucketing(self.inner, self.size).assign(keys, key_columns)
            return pc.add(inner, pa.scalar(self.partition * PARTITION_STRIDE, pa.int64()))
        if self.kind == "range":
            column = pc.cast(keys.column(key_columns[0]), pa.int64())
            return pc.divide(column, pa.scalar(self.size, pa.int64())).combine_chunks()
        rows = zip(*(keys.column(name).to_pylist() for name in key_columns), strict=True)
        return pa.array(
            [zlib.crc32("\x1f".join(map(repr, row)).encode()) % self.size for row in rows],
            pa.int64(),
        )

    def to_json(self, keys: Sequence[str] = ()) -> str:
        """The Delta table description: the bucketing, and the key columns it applies to."""
        extra: dict[str, object] = {"inner": self.inner} if self.inner else {}
        if keys:
            extra["keys"] = list(keys)
        return json.dumps({"tidemark_bucketing": self.kind, "size": self.size, **extra})

    @staticmethod
    def keys_from_json(text: str | None) -> tuple[str, ...] | None:
        """The key columns stored with the bucketing (tables created since they are)."""
        try:
            data = json.loads(text or "")
        except ValueError:
            return None
        keys = data.get("keys") if isinstance(data, dict) else None
        return tuple(keys) if isinstance(keys, list) and keys else None

    @staticmethod
    def with_keys(text: str | None, keys: Sequence[str]) -> str:
        """A stored description with its key columns replaced (a key column was renamed)."""
        try:
            data = json.loads(text or "")
        except ValueError:
            data = {}
        return json.dumps({**(data if isinstance(data, dict) else {}), "keys": list(keys)})

    @classmethod
    def from_json(cls, text: str | None) -> Bucketing | None:
        """Read back what `to_json` stored; None if the description is not ours."""
        try:
            data = json.loads(text or "")
        except ValueError:
            return None
        kinds = ("range", "hash", "partition")
        if not isinstance(data, dict) or data.get("tidemark_bucketing") not in kinds:
            return None
        return cls(data["tidemark_bucketing"], int(data["size"]), data.get("inner"))


def in_list(column: str, values: Sequence[int]) -> str:
    """A Delta SQL predicate `column IN (...)` over integers."""
    return f"{column} IN ({', '.join(str(int(v)) for v in sorted(set(values)))})"

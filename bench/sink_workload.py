"""Synthetic change batches for the sink benchmark, milestoned vectorized (no Python loops
over rows), so the benchmark measures the sinks and not the event generator.

Key choice (`keys`):
- `skew` (default): "recent rows change most": an update or delete hits key
  `top - 1 - floor(Exp(mean=HOT_MEAN))`, i.e. mostly the newest ~HOT_MEAN keys, independent of
  the table size; inserts take new keys at the top.
- `uniform`: updates and deletes hit any existing key with equal probability.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel import columns as c
from tidemark.kernel.model import MilestonedTable

TABLE = "bench.public.orders"
TS = pa.timestamp("us", tz="UTC")
HOT_MEAN = 10_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SOURCE = pa.schema(
    [
        ("id", pa.int64()),
        ("customer", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("status", pa.string()),
        ("updated_at", TS),
    ]
)


def pos_array(seqs: pa.Array) -> pa.Array:
    """Fixed-width positions (decimal digits, zero-padded: same ordering rule as hex)."""
    return pc.utf8_lpad(pc.cast(seqs, pa.string()), width=40, padding="0")


def source_rows(ids: pa.Array, seqs: pa.Array) -> dict[str, pa.Array]:
    n = len(ids)
    ts = pc.cast(pc.add(pc.cast(seqs, pa.int64()), 1_767_225_600_000_000 - 10**12), TS)
    return {
        "id": ids,
        "customer": pc.binary_join_element_wise(
            "cust-", pc.cast(pc.divide(ids, 7), pa.string()), ""
        ),
        "amount": pc.cast(pc.cast(ids, pa.int32()), pa.decimal128(12, 2)),
        "status": pa.array(["open", "paid", "shipped", "done"] * (n // 4 + 1), pa.string())[:n],
        "updated_at": ts,
    }


def initial_load(start: int, count: int, *, batch_id: int) -> MilestonedTable:
    """`count` inserts with keys start..start+count-1 (snapshot rows)."""
    ids = pa.array(range(start, start + count), pa.int64())
    seqs = ids
    return milestone(ids, pa.array(["r"] * count), seqs, None, batch_id=batch_id)


class Workload:
    """Batches of `size` changes against a table whose keys are 0..top-1."""

    def __init__(
        self, top: int, *, keys: str, seed: int = 1, inserts: float = 0.1, deletes: float = 0.05
    ) -> None:
        self.top = top
        self.keys = keys
        self.rnd = random.Random(seed)
        self.inserts = inserts
        self.deletes = deletes
        self.seq = 10**12

    def next_events(self, size: int) -> tuple[pa.Array, pa.Array, pa.Array]:
        n_ins = int(size * self.inserts)
        n_del = int(size * self.deletes)
        rnd = self.rnd
        if self.keys == "skew":
            pick = [
                max(0, self.top - 1 - int(rnd.expovariate(1 / HOT_MEAN)))
                for _ in range(size - n_ins)
            ]
        else:
            pick = [rnd.randrange(self.top) for _ in range(size - n_ins)]
        ids = list(range(self.top, self.top + n_ins)) + pick
        ops = ["c"] * n_ins + ["d"] * n_del + ["u"] * (size - n_ins - n_del)
        order = list(range(size))
        rnd.shuffle(order)
        self.top += n_ins
        seqs = list(range(self.seq, self.seq + size))
        self.seq += size
        return (
            pa.array([ids[i] for i in order], pa.int64()),
            pa.array([ops[i] for i in order], pa.string()),
            pa.array(seqs, pa.int64()),
        )


def milestone(
    ids: pa.Array, ops: pa.Array, seqs: pa.Array, current: pa.Table | None, *, batch_id: int
) -> MilestonedTable:
    """The core's output for these events, vectorized (each event makes a version)."""
    rows = source_rows(ids, seqs)
    events = pa.table(
        {
            **rows,
            c.OP: ops,
            c.POSITION: pos_array(seqs),
            c.TX_ID: pc.cast(seqs, pa.string()),
            c.SOURCE_TS: rows["updated_at"],
        }
    )
    events = events.sort_by([("id", "ascending"), (c.POSITION, "ascending")])
    n = events.num_rows
    key = events.column("id")
    same_next = pc.equal(key.slice(0, n - 1), key.slice(1)) if n > 1 else pa.array([], pa.bool_())
    same_next = (
        pa.concat_arrays([same_next.combine_chunks() if n > 1 else same_next, pa.array([False])])
        if n
        else pa.array([], pa.bool_())
    )
    same_prev = pa.concat_arrays([pa.array([False]), same_next[: max(n - 1, 0)]])[:n]
    ts = events.column(c.SOURCE_TS).combine_chunks()
    next_ts = pa.concat_arrays([ts[1:], pa.nulls(1, TS)])[:n] if n else ts
    is_delete = pc.equal(events.column(c.OP), "d")
    last = pc.invert(same_next)
    source = events.select(SOURCE.names)
    batch = pa.scalar(batch_id, pa.int64())
    valid_to = pc.if_else(same_next, next_ts, pa.scalar(None, TS))
    versions = source.append_column(c.VALID_FROM, ts).append_column(c.VALID_TO, valid_to)
    versions = versions.append_column(c.BATCH_IN, pa.repeat(batch, n))
    versions = versions.append_column(
        c.BATCH_OUT, pc.if_else(same_next, batch, pa.scalar(None, pa.int64()))
    )
    versions = versions.append_column(c.OP, events.column(c.OP)).append_column(
        c.POSITION, events.column(c.POSITION)
    )
    first = events.filter(pc.invert(same_prev))
    if current is not None and current.num_rows:
        first = first.filter(pc.is_in(first.column("id"), value_set=current.column("id")))
    else:
        first = first.slice(0, 0)
    closes = pa.table(
        {
            "id": first.column("id"),
            c.VALID_TO: first.column(c.SOURCE_TS),
            c.BATCH_OUT: pa.repeat(batch, first.num_rows),
        }
    )
    tail = events.filter(last)
    upserts = tail.filter(pc.invert(pc.equal(tail.column(c.OP), "d")))
    live = upserts.select([*SOURCE.names, c.OP, c.POSITION, c.SOURCE_TS]).append_column(
        c.BATCH, pa.repeat(batch, upserts.num_rows)
    )
    changelog = events.append_column(c.BATCH, pa.repeat(batch, n)).append_column(
        c.INGESTED_AT, pa.repeat(pa.scalar(EPOCH + timedelta(seconds=batch_id), TS), n)
    )
    return MilestonedTable(
        table=TABLE,
        key_columns=("id",),
        changelog=changelog,
        live_upserts=live,
        live_deletes=tail.filter(pc.equal(tail.column(c.OP), "d")).select(["id"]),
        forensic_inserts=versions.filter(pc.invert(is_delete)),
        forensic_closes=closes,
        last_position=max(events.column(c.POSITION).to_pylist(), default=""),
    )

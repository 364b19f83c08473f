"""The bucket cache: one byte budget for every live and forensic layer of a lake."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa

from tests.support.lakes import Driver
from tests.support.milestones import event, pos, ts
from tidemark.sinks.delta.buckets import BucketCache
from tidemark.sinks.lake import Lake

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("balance", pa.decimal128(12, 2))])


def _rows(n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64())})


def test_the_least_recently_used_bucket_goes_first_whatever_its_layer() -> None:
    one = _rows(100)
    cache = BucketCache(max_bytes=3 * one.nbytes)
    live, forensic = cache.layer(), cache.layer()
    cache.put(live, 1, one)
    cache.put(forensic, 1, one)
    cache.put(live, 2, one)
    assert cache.get(live, 1) is not None  # used again: now the most recent
    cache.put(forensic, 2, one)  # over budget: forensic bucket 1 was used least recently
    assert cache.get(forensic, 1) is None
    assert [cache.get(live, 1), cache.get(live, 2), cache.get(forensic, 2)] == [one, one, one]
    assert cache.nbytes == 3 * one.nbytes
    cache.clear(live)
    assert cache.get(live, 1) is None and cache.get(forensic, 2) is not None
    assert cache.nbytes == one.nbytes


def test_a_cached_slice_does_not_keep_its_parent_alive() -> None:
    """The budget counts what an entry holds: a slice of a big table is copied out, so the
    big table's buffers can go."""
    big = pa.table(
        {
            "id": pa.array(range(1_000_000), pa.int64()),
            "name": pa.array([f"n{i}" for i in range(1_000_000)]),
        }
    )
    part = big.slice(500, 100)
    assert part.get_total_buffer_size() > 100 * part.nbytes
    cache = BucketCache(max_bytes=10 * part.nbytes)
    layer = cache.layer()
    cache.put(layer, 1, part)
    kept = cache.get(layer, 1)
    assert kept is not None and kept.equals(part)
    assert kept.get_total_buffer_size() < 2 * part.nbytes + 1024
    small = _rows(100)
    cache.put(layer, 2, small)
    assert cache.get(layer, 2) is small  # nothing to gain: kept as it is


def test_tables_of_one_lake_share_the_budget(lake_root) -> None:
    budget = 64 * 2**10
    lake = Lake(lake_root(), app_id="cache", cache_bytes=budget)
    try:
        drivers = [Driver(lake, f"shop.public.t{i}", SCHEMA) for i in range(3)]
        batch = 0
        for driver in drivers:
            batch += 1
            rows = [
                event("c", pos(k), ts(k), id=k * 20_000, name=f"n{k}" * 50, balance=Decimal(k))
                for k in range(1, 40)
            ]
            driver.run(rows, batch_id=batch)
        assert 0 < lake.cache.nbytes <= budget
        # evicted buckets are read back from storage: every table is still whole
        for driver in drivers:
            assert len(driver.read("live")) == 39
            assert len(driver.read("forensic")) == 39
            batch += 1
            update = event("u", pos(99), ts(99), id=20_000, name="x", balance=None)
            driver.run([update], batch_id=batch)
            assert {r["name"] for r in driver.read("live") if r["id"] == 20_000} == {"x"}
    finally:
        lake.close()

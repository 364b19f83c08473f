"""Files Tidemark writes itself: a batch spread over many buckets streams them a group at a
time and lands exactly like a reference, and every file carries statistics a reader can
trust for skipping (bounds that hold every value, nothing it could get wrong)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.lakes import Driver
from tests.support.milestones import event, pos, ts
from tidemark.kernel import columns as c
from tidemark.kernel.columns import Layer
from tidemark.sinks.delta.bucketed import GROUP_BUCKETS
from tidemark.sinks.delta.files import (
    FileWriter,
    dictionary_columns,
    file_stats,
    table_filesystem,
)
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.lake import Lake

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
TABLE = "s.p.spread"
RANGE = 4  # keys per bucket: 64 keys fill 16 buckets, more than one group


def _stats_of(rows: pa.Table, **options) -> dict:
    """The statistics of `rows` written as one Parquet file (in memory), as a writer's."""
    written: list[pq.FileMetaData] = []
    pq.write_table(rows, pa.BufferOutputStream(), metadata_collector=written, **options)
    return json.loads(file_stats(rows, rows.column_names, written[0]))


def test_bounds_hold_every_value_and_doubtful_ones_are_left_out():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = pa.table(
        {
            "n": pa.array([3, None, -7], pa.int64()),
            "at": pa.array(
                [t0 + timedelta(microseconds=1500), t0 + timedelta(microseconds=2001), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "short": ["b", "a", None],
            "long": ["x" * 40, "y", "z"],
            "f": pa.array([1.0, math.nan, 2.0]),
            "none": pa.array([None, None, None], pa.int64()),
            "flag": [True, False, True],
            "naive": pa.array([1, 2, 3], pa.timestamp("us")),
        }
    )
    stats = _stats_of(rows)
    assert stats["numRecords"] == 3
    assert stats["nullCount"] == {
        "n": 1,
        "at": 1,
        "short": 1,
        "long": 0,
        "f": 0,
        "none": 3,
        "flag": 0,
        "naive": 0,
    }
    # milliseconds: the min rounds down, the max rounds up, so both rows stay inside
    assert stats["minValues"] == {"n": -7, "at": "2026-01-01T00:00:00.001Z", "short": "a"}
    assert stats["maxValues"] == {"n": 3, "at": "2026-01-01T00:00:00.003Z", "short": "b"}


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=30),
    group_rows=st.integers(min_value=1, max_value=8),
)
def test_string_bounds_taken_from_the_parquet_statistics_hold_every_value(values, group_rows):
    """The writer takes string bounds from the statistics Parquet computed (byte order over
    every row group): exactly the smallest and largest value, left out when either is
    longer than the bounds Delta keeps; nothing else changes."""
    rows = pa.table({"s": pa.array(values, pa.string()), "n": pa.array(range(len(values)))})
    stats = _stats_of(rows, row_group_size=group_rows)
    present = [v for v in values if v is not None]
    assert stats["nullCount"] == {"s": len(values) - len(present), "n": 0}
    assert stats["minValues"]["n"] == 0 and stats["maxValues"]["n"] == len(values) - 1
    low, high = (min(present), max(present)) if present else (None, None)
    if present and len(low) <= 32 and len(high) <= 32:
        assert (stats["minValues"]["s"], stats["maxValues"]["s"]) == (low, high)
    else:
        assert "s" not in stats["minValues"] and "s" not in stats["maxValues"]


def test_only_repeating_strings_are_dictionary_encoded(tmp_path):
    n = 1_000
    rows = pa.table(
        {
            "status": pa.array(["open", "closed"] * (n // 2)),
            "iban": pa.array([f"DE{i:020d}" for i in range(n)]),
            "empty": pa.nulls(n, pa.string()),
            "amount": pa.array(range(n), pa.int64()),
        }
    )
    chosen = dictionary_columns(rows)
    assert chosen == ["status", "empty"]
    pq.write_table(rows, tmp_path / "f.parquet", use_dictionary=chosen)
    meta = pq.ParquetFile(tmp_path / "f.parquet").metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(4)}
    assert "RLE_DICTIONARY" in encodings["status"]
    assert "RLE_DICTIONARY" not in encodings["iban"]
    assert pq.read_table(tmp_path / "f.parquet").equals(rows)


def spread_events(first: int, n: int) -> list[dict]:
    return [event("c", pos(first + i), ts(first + i), id=i, v=f"v{i}") for i in range(n)]


def test_a_batch_over_many_buckets_lands_whole_with_trustworthy_stats(lake_root):
    lake = Lake(lake_root(), app_id="spread", range_size=RANGE)
    d = Driver(lake, TABLE, SCHEMA)
    keys = 16 * RANGE
    assert keys // RANGE > GROUP_BUCKETS
    d.run(spread_events(1, keys))  # creates the tables
    # every key updated, every third deleted, in one batch that touches all 16 buckets
    n = 1000
    batch = [event("u", pos(n + i), ts(n + i), id=i, v=f"w{i}") for i in range(keys)]
    batch += [event("d", pos(2 * n + i), ts(2 * n + i), id=i) for i in range(0, keys, 3)]
    d.run(batch)
    d.run([event("u", pos(3 * n), ts(3 * n), id=1, v="last")])  # a hot bucket after

    live = {r["id"]: r["v"] for r in d.read("live")}
    expected = {i: f"w{i}" for i in range(keys) if i % 3}
    expected[1] = "last"
    assert live == expected
    forensic = d.read("forensic")
    assert len(forensic) == keys + keys + 1  # v, w (closed or deleted), last
    open_rows = {r["id"]: r["v"] for r in forensic if r[c.VALID_TO] is None}
    assert open_rows == expected
    assert all(sum(r["id"] == i for r in forensic) == (3 if i == 1 else 2) for i in range(keys))

    for layer in ("live", "forensic"):
        uri = table_uri(lake.root, layer, TABLE)
        actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True)).to_pylist()
        for action in actions:
            data = pq.read_table(f"{uri}/{action['path']}")
            assert action["num_records"] == data.num_rows
            bounded = [k[4:] for k in action if k.startswith("min.") and action[k] is not None]
            assert "id" in bounded
            if layer == "forensic":
                assert c.BATCH_IN in bounded and c.VALID_FROM in bounded
            for name in bounded:
                values = [v for v in data.column(name).to_pylist() if v is not None]
                assert action[f"min.{name}"] <= min(values)
                assert max(values) <= action[f"max.{name}"]


def test_files_written_through_the_object_store_land_too(lake_root):
    """An object-store lake (S3 in the compose stack) writes through delta-rs's store rather
    than the local filesystem: same files, same commit."""
    lake = Lake(lake_root(), app_id="store", range_size=RANGE)
    d = Driver(lake, TABLE, SCHEMA)
    d.run(spread_events(1, 8))
    uri = table_uri(lake.root, "live", TABLE)
    dt = DeltaTable(uri)
    writer = FileWriter(dt, ["_tm_bucket"], filesystem=table_filesystem(dt, native=False))
    stored = pa.table(dt.to_pyarrow_table())
    bucket0 = stored.filter(pc.less(stored.column("id"), 2)).sort_by("id")  # 2 of keys 0-3
    bucket0 = bucket0.set_column(bucket0.schema.get_field_index("v"), "v", pa.array(["s0", "s1"]))
    writer.write(bucket0, {"_tm_bucket": "0"})
    handle = lake.sink(TABLE, Layer.LIVE).handle
    handle.refresh()
    handle.replace_files(
        writer.wait(), partitions=[("_tm_bucket", "in", ["0"])], batch_id=99, position=pos(51)
    )
    rows = {r["id"]: r["v"] for r in pa.table(DeltaTable(uri).to_pyarrow_table()).to_pylist()}
    assert rows == {0: "s0", 1: "s1", 4: "v4", 5: "v5", 6: "v6", 7: "v7"}
    assert DeltaTable(uri).transaction_version(handle.app_id) == 99

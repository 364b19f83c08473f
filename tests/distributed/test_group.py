"""Group commits: one Delta commit per layer holds several partitions' batches, and each
partition's offset is still recovered on its own (restart, zombie, crash between layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.distributed.support import read_layer
from tests.distributed.test_lane import SPEC, _changelog, _updates
from tests.distributed.test_lane import records as records
from tidemark.connectors.decode.decoder import Decoder
from tidemark.kernel.columns import Layer
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.distributed.group import TopicGroup
from tidemark.stream_processors.distributed.lane import KafkaRecord, PartitionLane

ALL = frozenset(Layer)
APP = "tidemark:g"


def _group(
    root: Path, *, partitions=(0, 1), by_partition: bool = True, layers: frozenset[Layer] = ALL
) -> tuple[TopicGroup, dict[int, PartitionLane]]:
    lake = Lake(str(root), app_id=f"{APP}:{SPEC.topic}")
    decode = Decoder("postgres", {}).decode
    lanes = {
        p: PartitionLane(
            SPEC,
            p,
            lake=lake,
            layers=layers,
            decode=decode,
            partition_buckets=by_partition,
            lane_app=f"{APP}:{SPEC.topic}:{p}",
        )
        for p in partitions
    }
    group = TopicGroup(
        SPEC, lake=lake, layers=layers, decode=decode, partition_buckets=by_partition
    )
    return group, lanes


def _halves(records: list[KafkaRecord]) -> list[list[KafkaRecord]]:
    """Partition 0: ids 1-6, partition 1: ids 7-12; each 6 inserts then 6 updates."""
    second = [KafkaRecord(i, r.key, r.value) for i, r in enumerate(records[6:])]
    return [records[:6] + _updates(records[:6], 6), second + _updates(second, 6)]


def _versions(root: Path, layer: str) -> int:
    return DeltaTable(str(root / layer / SPEC.table)).version()


@pytest.mark.parametrize("by_partition", [True, False], ids=["partition-buckets", "key-buckets"])
def test_one_commit_per_layer_records_every_partitions_offset(tmp_path, records, by_partition):
    group, lanes = _group(tmp_path, by_partition=by_partition)
    halves = _halves(records)
    for step in range(3):  # 3 batches of 4 records from each partition
        out = group.apply({lanes[p]: halves[p][4 * step : 4 * step + 4] for p in (0, 1)})
        assert out.events == 8 and out.batches == 1 and not out.seeks
    for layer in ("changelog", "live", "forensic"):
        assert _versions(tmp_path, layer) == 2  # versions 0, 1, 2: one commit per batch
    live = read_layer(tmp_path, "live", SPEC.table)
    assert sorted(live.column("id").to_pylist()) == list(range(1, 13))
    assert all(v.endswith("!") for v in live.column("v").to_pylist())
    assert len(_changelog(tmp_path)) == 24 == len(set(_changelog(tmp_path)))
    assert read_layer(tmp_path, "forensic", SPEC.table).num_rows == 24
    buckets = set(live.column("_tm_bucket").to_pylist())
    assert buckets == ({0, 1_000_000} if by_partition else {0})
    # a restart reads each partition's offset back from the shared commits
    _, again = _group(tmp_path, by_partition=by_partition)
    assert [again[p].lake_offsets() for p in (0, 1)] == [(12, 12), (12, 12)]
    # a lone lane (its own lake, the old layout) recovers the same offset
    alone = PartitionLane(
        SPEC, 1, lake=Lake(str(tmp_path), app_id=f"{APP}:{SPEC.topic}:1"), layers=ALL
    )
    assert alone.next_offset == 12


def test_partitions_at_different_offsets_and_one_without_records(tmp_path, records):
    group, lanes = _group(tmp_path, partitions=(0, 1, 2))
    halves = _halves(records)
    assert group.apply({lanes[0]: halves[0][:5], lanes[1]: halves[1][:2]}).events == 7
    out = group.apply({lanes[0]: halves[0][3:9], lanes[1]: halves[1][2:4], lanes[2]: []})
    assert out.events == 6 and not out.seeks  # 3, 4 of partition 0 were replays
    _, again = _group(tmp_path, partitions=(0, 1, 2))
    assert again[0].next_offset == 9 and again[1].next_offset == 4
    assert again[2].next_offset == 0


def test_a_gap_in_one_partition_does_not_hold_back_the_other(tmp_path, records):
    group, lanes = _group(tmp_path)
    halves = _halves(records)
    out = group.apply({lanes[0]: halves[0][:2], lanes[1]: halves[1][3:5]})
    assert out.seeks == {1: 0} and out.events == 2
    assert lanes[0].lake_offsets() == (2, 2) and lanes[1].lake_offsets() == (0, 0)
    assert group.apply({lanes[1]: halves[1][:5]}).events == 5


def test_a_zombie_partition_is_left_out_and_resynced(tmp_path, records):
    group, lanes = _group(tmp_path)
    owner_group, owner = _group(tmp_path, partitions=(1,))
    halves = _halves(records)
    assert owner_group.apply({owner[1]: halves[1][:5]}).events == 5  # p1 moved meanwhile
    out = group.apply({lanes[0]: halves[0][:4], lanes[1]: halves[1][:6]})
    assert out.events == 4 and out.seeks == {1: 5}
    assert group.apply({lanes[1]: halves[1][5:8]}).events == 3
    positions = _changelog(tmp_path)
    assert len(positions) == 12 == len(set(positions))


def test_a_crash_between_layers_of_a_group_commit_is_completed_per_partition(tmp_path, records):
    group, lanes = _group(tmp_path)
    halves = _halves(records)
    group.apply({lanes[0]: halves[0][:2], lanes[1]: halves[1][:2]})
    # the crash: the next group batch reached the changelog only
    partial, planes = _group(tmp_path, layers=frozenset({Layer.CHANGELOG}))
    assert partial.apply({planes[0]: halves[0][2:5], planes[1]: halves[1][2:4]}).events == 5
    _, restarted = _group(tmp_path)
    assert restarted[0].lake_offsets() == (2, 5) and restarted[1].lake_offsets() == (2, 4)
    group, lanes = _group(tmp_path)
    out = group.apply({lanes[0]: halves[0][2:8], lanes[1]: halves[1][2:8]})
    assert not out.seeks
    assert [lanes[p].lake_offsets() for p in (0, 1)] == [(8, 8), (8, 8)]
    positions = _changelog(tmp_path)
    assert len(positions) == 16 == len(set(positions))
    live = read_layer(tmp_path, "live", SPEC.table)
    assert sorted(live.column("id").to_pylist()) == list(range(1, 13))
    forensic = read_layer(tmp_path, "forensic", SPEC.table)
    assert forensic.num_rows == 16


def test_two_workers_creating_a_key_bucketed_table_at_once_lose_no_rows(tmp_path, records):
    """Worker A looked (no table yet), worker B created it, A's first commit was appended
    beside B's rows in the same key bucket: A must not trust its cache of that bucket."""
    group_a, lanes_a = _group(tmp_path, partitions=(0,), by_partition=False)
    group_b, lanes_b = _group(tmp_path, partitions=(1,), by_partition=False)
    halves = _halves(records)
    handles = [group_a.lake.sink(SPEC.table, layer).handle for layer in ALL]
    assert all(h.dt is None for h in handles)
    assert group_b.apply({lanes_b[1]: halves[1][:6]}).events == 6  # B creates the table
    originals = [h.refresh for h in handles]
    for handle in handles:  # A does not see it yet: it looked just before B committed
        handle.refresh = lambda: None
    assert group_a.apply({lanes_a[0]: halves[0][:6]}).events == 6
    for handle, original in zip(handles, originals, strict=True):
        handle.refresh = original
    assert group_a.apply({lanes_a[0]: halves[0][6:]}).events == 6  # A's updates
    live = read_layer(tmp_path, "live", SPEC.table)
    assert sorted(live.column("id").to_pylist()) == list(range(1, 13))
    assert set(live.column("_tm_bucket").to_pylist()) == {0}  # one shared key bucket


def test_a_conflict_after_the_layers_committed_is_retried_without_dropping_events(
    tmp_path, records
):
    """The batch log lost a race after every layer committed: the retry skips the layers
    (their txns hold the batch), writes the log, and counts every event once."""
    from tidemark.sinks.errors import SinkCommitConflict

    group, lanes = _group(tmp_path)
    halves = _halves(records)
    append = group.lake.batch_log.append
    failures = []

    def lose_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise SinkCommitConflict("lost to a concurrent writer", table="batches")
        return append(*args, **kwargs)

    group.lake.batch_log.append = lose_once
    out = group.apply({lanes[0]: halves[0][:6], lanes[1]: halves[1][:6]})
    assert failures and out.events == 12 and out.batches == 1 and not out.seeks
    assert len(group.lake.batch_log.read()) == 1
    for layer in ("changelog", "live", "forensic"):
        assert _versions(tmp_path, layer) == 0  # each layer committed once
    assert group.apply({lanes[0]: halves[0][6:], lanes[1]: halves[1][6:]}).events == 12
    assert len(_changelog(tmp_path)) == 24 == len(set(_changelog(tmp_path)))

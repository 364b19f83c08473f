"""A lane (one topic-partition) against real Delta tables, with recorded Debezium envelopes:
replays are dropped, gaps seek back, offsets survive restarts, a zombie cannot double-apply,
and layers left at different offsets by a crash are evened out without doubling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.support import read_layer
from tidemark.kernel.columns import Layer
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.distributed.lane import KafkaRecord, PartitionLane
from tidemark.stream_processors.distributed.topics import SourceTopic

DATA = Path(__file__).resolve().parents[1] / "data" / "debezium" / "postgres_toast_identity.jsonl"
SPEC = SourceTopic("src.public.fullrow", "src.public.fullrow", "src", "postgres", None)
ALL = frozenset(Layer)


@pytest.fixture
def records() -> list[KafkaRecord]:
    """12 inserts made from a recorded Debezium insert envelope (ids, LSNs, tx ids vary)."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    template = next(
        r
        for r in rows
        if r["destination"] == SPEC.topic and json.loads(r["value"])["payload"]["op"] == "c"
    )
    out = []
    for i in range(12):
        key, value = json.loads(template["key"]), json.loads(template["value"])
        lsn, tx = 35_597_656 + 1000 * i, 1000 + i
        key["payload"]["id"] = i + 1
        payload = value["payload"]
        payload["after"] = {**payload["after"], "id": i + 1, "v": f"v{i}"}
        payload["source"].update(lsn=lsn, sequence=json.dumps([str(lsn), str(lsn)]), txId=tx)
        payload["transaction"]["id"] = f"{tx}:{lsn}"
        out.append(KafkaRecord(i, json.dumps(key).encode(), json.dumps(value).encode()))
    return out


def _lane(root: Path, *, app: str = "tidemark:t:src.public.alltypes:0") -> PartitionLane:
    return PartitionLane(SPEC, 0, lake=Lake(str(root), app_id=app), layers=ALL)


def _changelog(root: Path) -> list[str]:
    table = read_layer(root, "changelog", SPEC.table)
    return [] if table is None else table.column("_tm_position").to_pylist()


def test_offsets_replays_and_restart(tmp_path, records):
    assert len(records) >= 8
    lane = _lane(tmp_path)
    assert lane.next_offset == 0
    first = lane.apply(records[:4])
    assert first.events == 4 and first.seek_to is None
    assert lane.lake_offsets() == (4, 4)  # txn version of every layer = next offset
    again = lane.apply(records[2:7])  # 2 and 3 are replays
    assert again.events == 3
    assert len(_changelog(tmp_path)) == 7 == len(set(_changelog(tmp_path)))
    restarted = _lane(tmp_path)
    assert restarted.next_offset == 7
    assert restarted.apply(records[:7]).events == 0  # all replays


def test_a_gap_seeks_back_and_is_accepted_only_when_the_broker_confirms_it(tmp_path, records):
    lane = _lane(tmp_path)
    lane.apply(records[:3])
    assert lane.apply(records[5:6]).seek_to == 3  # 3 and 4 are missing: re-read them
    assert lane.apply(records[5:7]).seek_to is None  # stale records after the seek: dropped
    ok = lane.apply(records[3:6])  # the re-read brings them
    assert ok.seek_to is None and ok.events == 3
    assert lane.lake_offsets() == (6, 6)
    # offset 6 does not exist on the broker (e.g. a transaction marker): accepted only
    # because the verifier, which fetches offset 6 directly, got offset 7 back
    asked = []
    lane.verify_gap = lambda topic, partition, offset: asked.append(offset) or 7
    accepted = lane.apply(records[7:8])
    assert asked == [6] and accepted.seek_to is None and accepted.events == 1
    assert lane.lake_offsets() == (8, 8)


def test_without_confirmation_a_gap_is_never_skipped(tmp_path, records):
    lane = _lane(tmp_path)
    lane.apply(records[:3])
    for _ in range(5):
        out = lane.apply(records[5:8])
        assert out.events == 0
    assert lane.lake_offsets() == (3, 3)


def test_a_zombie_cannot_apply_what_the_new_owner_applied(tmp_path, records):
    zombie = _lane(tmp_path)
    owner = _lane(tmp_path)
    assert owner.apply(records[:5]).events == 5
    late = zombie.apply(records[:6])  # still believes the lane is at 0
    assert late.events == 0 and late.seek_to == 5
    assert zombie.apply(records[5:7]).events == 2  # re-synced: goes on from the lake
    positions = _changelog(tmp_path)
    assert len(positions) == 7 == len(set(positions))


def test_layers_left_apart_by_a_crash_are_evened_out_without_doubling(tmp_path, records):
    lane = _lane(tmp_path)
    lane.apply(records[:2])
    # A crash after the changelog commit of the batch ending at offset 4 (next 5), before
    # the other layers: replay that batch through the changelog layer only.
    partial = PartitionLane(
        SPEC,
        0,
        lake=Lake(str(tmp_path), app_id=lane.lake.app_id),
        layers=frozenset({Layer.CHANGELOG}),
    )
    assert partial.apply(records[2:5]).events == 3
    restarted = _lane(tmp_path)
    assert restarted.lake_offsets() == (2, 5) and restarted.boundary == 5
    out = restarted.apply(records[2:7])
    assert out.batches == 2  # the boundary batch [2, 5), then [5, 7)
    assert restarted.lake_offsets() == (7, 7)
    positions = _changelog(tmp_path)
    assert len(positions) == 7 == len(set(positions))
    live = read_layer(tmp_path, "live", SPEC.table)
    assert live.num_rows == len(set(live.column("id").to_pylist()))


def _updates(records: list[KafkaRecord], first_offset: int) -> list[KafkaRecord]:
    """An update of each record's row (a later LSN), as Debezium writes it."""
    out = []
    for i, record in enumerate(records):
        value = json.loads(record.value)
        payload = value["payload"]
        lsn = payload["source"]["lsn"] + 500_000
        payload.update(
            op="u",
            before=dict(payload["after"]),
            after={**payload["after"], "v": payload["after"]["v"] + "!"},
        )
        payload["source"].update(lsn=lsn, sequence=json.dumps([str(lsn), str(lsn)]))
        out.append(KafkaRecord(first_offset + i, record.key, json.dumps(value).encode()))
    return out


@pytest.mark.parametrize("by_partition", [True, False], ids=["partition-buckets", "key-buckets"])
def test_two_partitions_of_one_table_share_it_without_losing_rows(tmp_path, records, by_partition):
    lanes = [
        PartitionLane(
            SPEC,
            p,
            lake=Lake(str(tmp_path), app_id=f"tidemark:t:{p}"),
            layers=ALL,
            partition_buckets=by_partition,
        )
        for p in (0, 1)
    ]
    second = [KafkaRecord(i, r.key, r.value) for i, r in enumerate(records[6:])]
    # each partition: 6 inserts then an update of each (same offsets in both partitions)
    halves = [records[:6] + _updates(records[:6], 6), second + _updates(second, 6)]
    for step in range(6):  # interleaved commits of the two lanes
        for lane, half in zip(lanes, halves, strict=True):
            assert lane.apply(half[2 * step : 2 * step + 2]).events == 2
    live = read_layer(tmp_path, "live", SPEC.table)
    assert sorted(live.column("id").to_pylist()) == list(range(1, 13))
    assert all(v.endswith("!") for v in live.column("v").to_pylist())
    assert len(_changelog(tmp_path)) == 24
    forensic = read_layer(tmp_path, "forensic", SPEC.table)
    assert forensic.num_rows == 24  # every version, the closed ones too
    buckets = set(live.column("_tm_bucket").to_pylist())
    if by_partition:
        assert buckets == {0, 1_000_000}  # each partition has its own bucket
    else:
        assert buckets == {0}  # key ranges: both partitions write bucket 0

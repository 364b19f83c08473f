"""The layout's promises: a commit rewrites only the buckets it touches, history is only
ever appended, live-only tables still answer `current_versions`, concurrent writers on
different buckets both land, and background maintenance compacts without blocking."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pyarrow as pa
from deltalake import DeltaTable

from tests.support.lakes import Driver
from tests.support.milestones import event, milestone_rows, pos, ts
from tidemark.kernel.columns import Layer
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.lake import Lake

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
TABLE = "s.p.items"
FAR = 1_000_000  # another bucket


def files(lake: Lake, layer: str) -> set[tuple[str, str]]:
    dt = DeltaTable(table_uri(lake.root, layer, TABLE))
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    return {(a["path"], str(a.get("partition._tm_current", ""))) for a in actions}


def test_commit_rewrites_only_touched_buckets_and_appends_history(lake_root):
    lake = Lake(lake_root(), app_id="layout")
    d = Driver(lake, TABLE, SCHEMA)
    d.run([event("c", pos(1), ts(1), id=1, v="a"), event("c", pos(2), ts(2), id=FAR, v="b")])
    live_before, forensic_before = files(lake, "live"), files(lake, "forensic")
    d.run([event("u", pos(3), ts(3), id=FAR, v="b2")])
    live_after, forensic_after = files(lake, "live"), files(lake, "forensic")
    untouched = {p for p, _ in live_before if "_tm_bucket=0/" in p}
    assert untouched and untouched <= {p for p, _ in live_after}
    assert len(live_after - live_before) == 1  # the touched bucket's new file only
    for n in range(4, 8):
        history_before = {f for f in files(lake, "forensic") if f[1] == "False"}
        d.run([event("u", pos(n), ts(n), id=FAR, v=f"b{n}")])
        history_after = {f for f in files(lake, "forensic") if f[1] == "False"}
        assert history_before < history_after  # appended, never rewritten
    assert {p for p, _ in forensic_before if "_tm_bucket=0/" in p} <= {
        p for p, _ in files(lake, "forensic")
    }
    assert forensic_after


def test_live_only_table_answers_current_versions(lake_root):
    lake = Lake(lake_root(), app_id="live-only")
    d = Driver(lake, TABLE, SCHEMA)
    live_only = {TABLE: frozenset({Layer.LIVE})}
    mt = d.milestone([event("c", pos(1), ts(1), id=1, v="a")], batch_id=1)
    lake.commit_batch(1, [mt], source_positions={}, started_at=datetime.now(UTC), layers=live_only)
    keys = pa.table({"id": pa.array([1], pa.int64())})
    current = lake.current_versions(TABLE, keys, live_only[TABLE])
    assert current.column("_tm_position").to_pylist() == [pos(1)]
    assert current.column("_tm_valid_from").to_pylist() == [ts(1)]
    assert not DeltaTable.is_deltatable(table_uri(lake.root, "forensic", TABLE))


def test_two_writers_on_different_buckets_commit_concurrently(lake_root):
    root = lake_root()
    seed = Lake(root, app_id="seed")
    Driver(seed, TABLE, SCHEMA).run(
        [event("c", pos(1), ts(1), id=1, v="a"), event("c", pos(2), ts(2), id=FAR, v="b")]
    )
    errors = []

    def worker(name: str, key: int, first: int) -> None:
        lake = Lake(root, app_id=name)
        try:
            for i in range(6):
                n = first + i
                keys = pa.table({"id": pa.array([key], pa.int64())})
                mt = milestone_rows(
                    TABLE,
                    ("id",),
                    SCHEMA,
                    [event("u", pos(n), ts(n), id=key, v=f"{name}{i}")],
                    lake.current_versions(TABLE, keys),
                    batch_id=i + 1,
                )
                lake.commit_batch(i + 1, [mt], source_positions={}, started_at=datetime.now(UTC))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=("w1", 1, 10)),
        threading.Thread(target=worker, args=("w2", FAR, 100)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    d = Driver(Lake(root, app_id="reader"), TABLE, SCHEMA)
    assert [(r["id"], r["v"]) for r in d.read("live")] == [(1, "w15"), (FAR, "w25")]
    forensic = d.read("forensic")
    assert len(forensic) == 14 and sum(r["_tm_valid_to"] is None for r in forensic) == 2
    assert len(d.read("changelog")) == 14


def test_maintenance_compacts_history_while_commits_go_on(lake_root):
    lake = Lake(lake_root(), app_id="maint", maintenance=True)
    lake.maintenance.interval = 0.05
    d = Driver(lake, TABLE, SCHEMA)
    for n in range(1, 16):
        d.run([event("c" if n == 1 else "u", pos(n), ts(n), id=1, v=f"v{n}")])
    lake.wait_idle()
    assert lake.maintenance.files_compacted > 0
    history = [f for f in files(lake, "forensic") if f[1] == "False"]
    changelog = files(lake, "changelog")
    before_rows = d.read("forensic")
    assert len(history) < 14 and len(changelog) < 15
    for n in range(16, 19):
        d.run([event("u", pos(n), ts(n), id=1, v=f"v{n}")])
    lake.close()
    assert len(d.read("forensic")) == len(before_rows) + 3
    assert [r["v"] for r in d.read("live")] == ["v18"]


def test_recording_lake_keeps_the_same_idempotence_rule():
    from tests.support.recording_lake import RecordingLake

    lake = RecordingLake()
    mt = milestone_rows(
        TABLE, ("id",), SCHEMA, [event("c", pos(1), ts(1), id=1, v="a")], None, batch_id=1
    )
    assert not lake.commit_batch(1, [mt], source_positions={}, started_at=datetime.now(UTC)).skipped
    assert lake.commit_batch(1, [mt], source_positions={}, started_at=datetime.now(UTC)).skipped
    current = lake.current_versions(TABLE, pa.table({"id": pa.array([1, 2], pa.int64())}))
    assert current.column("v").to_pylist() == ["a"]
    assert lake.last_batch_id() == 1 and lake.applied_position(TABLE) == pos(1)


def test_layer_writers_keep_the_sink_protocol(lake_root):
    from tidemark.sinks.base import TableSink

    lake = Lake(lake_root(), app_id="proto")
    for layer in Layer:
        sink = lake.sink(TABLE, layer)
        assert isinstance(sink, TableSink) and sink.layer is layer
        assert not hasattr(sink, "compact")  # compaction lives in sinks.maintenance


def test_a_bad_location_fails_with_one_clear_line(tmp_path):
    import pytest

    from tidemark.sinks.errors import SinkError

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(SinkError, match=r"`.*not-a-dir/.*`") as info:
        lake = Lake(str(blocker), app_id="bad")
        Driver(lake, TABLE, SCHEMA).run([event("c", pos(1), ts(1), id=1, v="a")])
    assert "\n" not in str(info.value)

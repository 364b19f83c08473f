"""Exactly-once effect (DESIGN §3.3.1): replays change nothing, crashes leave readable
tables and the replay completes them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from tests.support import crash_writer as cw
from tests.support.lakes import Driver
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.lake import Lake

REPO = Path(__file__).resolve().parents[1]
N_BATCHES = 12


def snapshot(lake: Lake) -> dict[str, list[dict]]:
    d = Driver(lake, cw.TABLE, cw.SCHEMA)
    return {layer: d.read(layer) for layer in ("changelog", "live", "forensic")}


def reference(lake_root) -> dict[str, list[dict]]:
    lake = Lake(lake_root(), app_id="crash")
    cw.run(lake, cw.workload(N_BATCHES))
    return snapshot(lake)


def test_replaying_every_batch_twice_changes_nothing(lake_root):
    lake = Lake(lake_root(), app_id="crash")
    batches = cw.workload(4)
    cw.run(lake, batches)
    before = snapshot(lake)
    versions = {
        layer: DeltaTable(table_uri(lake.root, layer, cw.TABLE)).version()
        for layer in ("changelog", "live", "forensic")
    }
    for batch_id, events in enumerate(batches, start=1):
        for _ in range(2):
            result = Driver(lake, cw.TABLE, cw.SCHEMA).run(events, batch_id=batch_id)
            assert result.skipped
    assert snapshot(lake) == before
    for layer, version in versions.items():
        assert DeltaTable(table_uri(lake.root, layer, cw.TABLE)).version() == version


def test_kill_9_mid_commit_then_resume(lake_root):
    expected = reference(lake_root)
    root = lake_root()
    progress = Path(root + ".progress")
    rnd = random.Random(3)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.crash_writer", root, str(N_BATCHES)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        start = progress.read_text() if progress.exists() else "0"
        deadline = time.monotonic() + 120
        while (progress.read_text() if progress.exists() else "0") == start:
            assert proc.poll() is None or proc.returncode == 0, "writer failed"
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        time.sleep(rnd.uniform(0.0, 0.25))  # somewhere inside the next batch's commits
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    lake = Lake(root, app_id="crash")
    partial = snapshot(lake)  # readable after the crashes
    assert len(partial["changelog"]) <= len(expected["changelog"])
    cw.run(lake, cw.workload(N_BATCHES))
    assert snapshot(lake) == expected


def test_data_files_without_commit_are_ignored_and_replay_completes(lake_root):
    expected = reference(lake_root)
    root = lake_root()
    batches = cw.workload(N_BATCHES)
    cw.run(Lake(root, app_id="crash"), batches[:5])
    # a writer that died after writing its files but before the log entry
    for layer in ("changelog", "live", "forensic"):
        uri = Path(table_uri(root, layer, cw.TABLE))
        data_file = next(uri.rglob("*.parquet"))
        (data_file.parent / "part-00000-crashed-c000.snappy.parquet").write_bytes(
            data_file.read_bytes()
        )
        (uri / "_delta_log" / "_commit_crashed.json.tmp").write_text('{"add": ')
    lake = Lake(root, app_id="crash")
    assert lake.last_batch_id() == 5
    assert len(snapshot(lake)["changelog"]) == sum(len(b) for b in batches[:5])
    cw.run(lake, batches)
    assert snapshot(lake) == expected
    dt = DeltaTable(table_uri(root, "live", cw.TABLE))
    orphans = dt.vacuum(
        retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True
    )
    assert any("crashed" in path for path in orphans)


def test_current_versions_match_forensic_open_rows(lake_root):
    lake = Lake(lake_root(), app_id="crash", cache_bytes=1)  # force reads from storage
    cw.run(lake, cw.workload(3))
    open_rows = [r for r in snapshot(lake)["forensic"] if r["_tm_valid_to"] is None]
    keys = pa.table({"id": pa.array([r["id"] for r in open_rows] + [10**9], pa.int64())})
    current = lake.current_versions(cw.TABLE, keys)
    assert sorted(current.to_pylist(), key=lambda r: r["id"]) == open_rows

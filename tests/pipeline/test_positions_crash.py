"""Positions across processes: `tidemark run`/`tail` as child processes, stopped by signals
and by kill -9 (DESIGN §3.3).

- two runs of one pipeline: the second is refused naming the first, and a kill -9 of the
  first frees the pipeline at once (an OS lock, not a pid file);
- `tail` stopped by a signal leaves no replication slot holding WAL;
- an initial snapshot killed half-way is redone and reconciled: no row twice in any layer,
  rows deleted meanwhile closed;
- a re-snapshot (`tidemark resync`, or one start-up asks for) killed half-way completes after
  the restart, exactly.

These take Debezium's own snapshots (`snapshot: {loader: debezium}`); the parallel loader's
kill -9 and restarts are tests/loading's. Each ends with `verify` clean and, where the
lake's history is at stake, every key's versions equal to the source's own history
(`truth_support.py`).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline.reliability import ROOT, Pipeline, wait_streaming
from tests.pipeline.truth_support import (
    Versions,
    assert_versions,
    audited_table,
    changelog_ops,
    churn,
    drop_pipeline_slot,
    lake_versions,
    record_of,
    sql,
    unique_name,
    verify_config,
    wait_caught_up,
    write_config,
)
from tidemark.config import load_config
from tidemark.connectors.postgres.settings import replication_name
from tidemark.pipeline import open_lake
from tidemark.sinks.delta.dv.log import LogState
from tidemark.sinks.delta.dv.store import open_store

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

TABLE = "public.items"
LAKE_TABLE = "src.public.items"


def _tidemark(*args: str, state: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_STATE": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _slot(url: str, slot: str) -> tuple | None:
    rows = sql(url, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
    return rows[0] if rows else None


def _until(condition, *, timeout: float, what: str, alive=None, dump=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            if dump is not None:  # the pipeline's thread stacks into its log (SIGUSR1)
                dump.process.send_signal(signal.SIGUSR1)
                time.sleep(2)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _config(tmp: Path, url: str, name: str, **extra) -> Path:
    path = write_config(tmp / "p.yaml", url=url, lake=tmp / "lake", tables=[TABLE], name=name)
    if extra:
        document = yaml.safe_load(path.read_text())
        for key, value in extra.items():
            document[key] = {**document.get(key, {}), **value}
        path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.slow  # the run lock is also tested by tests/test_lock.py in the default run
def test_a_second_run_is_refused_naming_the_first_until_kill_9_frees_it(
    fresh_database, tmp_path
) -> None:
    url = fresh_database()
    audited_table(url, TABLE, 50)
    name = unique_name()
    config = _config(tmp_path, url, name)
    slot = replication_name(name, "src")
    state = tmp_path / "state"
    try:
        with Pipeline(config, state, tmp_path / "first.log") as first:
            first.start()
            wait_streaming(url, slot, pipeline=first)
            second = _tidemark("run", "--config", str(config), state=state, timeout=60)
            assert second.returncode == 2, second.stderr[-2000:]
            message = second.stderr.strip().splitlines()
            refusal = next(line for line in message if line.startswith("error:"))
            assert f"pid {first.process.pid}" in refusal and "since" in refusal, refusal
            # another state directory, the same lake: refused by the lake's lock
            other = _tidemark("run", "--config", str(config), state=tmp_path / "b", timeout=60)
            assert other.returncode == 2 and f"pid {first.process.pid}" in other.stderr
            first.kill()
            churn(url, TABLE, seed=1)
            first.start()  # at once: nothing left holding the pipeline
            wait_caught_up(load_config(config), check=lambda: _alive(first))
            assert first.terminate() == 0, first.log.read_text()[-3000:]
        verify_config(load_config(config))
    finally:
        drop_pipeline_slot(url, name)


def _alive(pipeline: Pipeline) -> None:
    assert pipeline.alive(), pipeline.log.read_text()[-3000:]


@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGHUP"],
)
def test_tail_stopped_by_a_signal_leaves_no_slot(fresh_database, tmp_path, sig) -> None:
    url = fresh_database()
    audited_table(url, TABLE, 5)
    name = unique_name()
    config = _config(tmp_path, url, name)
    slot = replication_name(f"{name}_tail", "src")
    # tail uses the pipeline's publication: made by a first run, or by hand as here
    sql(url, f"CREATE PUBLICATION {replication_name(name, 'src')} FOR TABLE {TABLE}")
    env = {**os.environ, "TIDEMARK_STATE": str(tmp_path / "state")}
    tail = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "tail", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in tail.stdout], daemon=True).start()
    try:
        _until(lambda: (_slot(url, slot) or (False,))[0], timeout=90, what="tail's slot")

        def printed() -> bool:  # once tail streams, a change shows
            sql(url, f"UPDATE {TABLE} SET v = 'seen' WHERE id = 1")
            try:
                return b'"seen"' in lines.get(timeout=2)
            except queue.Empty:
                return False

        _until(printed, timeout=90, what="tail to print a change")
        tail.send_signal(sig)
        assert tail.wait(60) == 0, tail.stderr.read()[-2000:]
        assert _slot(url, slot) is None
    finally:
        if tail.poll() is None:
            tail.kill()
        drop_pipeline_slot(url, f"{name}_tail")


SIZES = [3_000, pytest.param(20_000, marks=pytest.mark.slow)]


# Debezium's initial snapshot is no longer the default (the parallel loader is: a killed load
# resumes in tests/loading/test_resume.py); the default run stays under 15 min.
@pytest.mark.slow
@pytest.mark.parametrize("rows", SIZES)
def test_an_initial_snapshot_killed_half_way_is_redone_and_reconciled(
    fresh_database, tmp_path, rows
) -> None:
    """kill -9 while the first snapshot commits; rows change and vanish meanwhile; the restart
    snapshots again on a new slot: each row once in every layer, vanished rows closed."""
    url = fresh_database()
    audited_table(url, TABLE, rows)
    name = unique_name()
    config = _config(  # Debezium's own snapshot (the loader's kill -9: tests/loading)
        tmp_path,
        url,
        name,
        batching={"max_events": rows // 60, "max_latency_ms": 100},
        snapshot={"*": {"loader": "debezium"}},
    )
    lake = tmp_path / "lake"
    try:
        with Pipeline(config, tmp_path / "state", tmp_path / "run.log") as pipe:
            pipe.start()

            def half_way() -> bool:  # as the batch log says (the lake's commit point)
                record = record_of(load_config(config))
                arming = record.arming.get(LAKE_TABLE) if record else None
                return bool(arming and rows // 20 <= arming.rows < rows)

            _until(half_way, timeout=120, what="half the snapshot", alive=lambda: _alive(pipe))
            pipe.kill()
            # What the first attempt committed is what the batch log covers: a batch the kill
            # left in some layers but not in the log is rolled back by the next start, before
            # anything else (read here the same way, so it is not counted).
            lake_now = open_lake(load_config(config))
            try:
                lake_now.roll_back_unlogged([LAKE_TABLE])
            finally:
                lake_now.close()
            record = record_of(load_config(config))
            assert record is not None and record.arming[LAKE_TABLE].kind == "initial"
            first = lake_versions(str(lake), LAKE_TABLE)
            assert 0 < len(first) <= rows
            for key, versions in first.items():  # what the first attempt wrote is the table
                assert versions == [({"id": int(key), "v": f"v{key}", "n": int(key)}, True)]
            churn(url, TABLE, seed=1, size=rows)
            pipe.start()
            wait_caught_up(load_config(config), check=lambda: _alive(pipe))
            assert pipe.terminate() == 0, pipe.log.read_text()[-3000:]
        assert "did not complete" in pipe.log.read_text()
        verify_config(load_config(config))
        model = Versions({("public.items", k): [v[0][0]] for k, v in first.items()})
        model.open = {k: v[-1] for k, v in model.versions.items()}
        model.resnapshot(url, TABLE)
        assert_versions(model, str(lake), TABLE, LAKE_TABLE)
        # every version came from one of the two snapshots: a row read twice alike is one
        # event; the changelog closes each row that vanished with one delete
        ops = changelog_ops(str(lake), LAKE_TABLE)
        assert ops.get("r") == sum(len(v) for v in model.versions.values())
        gone = [k for k in first if model.open[("public.items", k)] is None]
        assert ops.get("d") == len(gone) > 0
    finally:
        drop_pipeline_slot(url, name)


@pytest.mark.parametrize(
    ("rows", "mode"),
    [
        (3_000, "copy_on_write"),
        pytest.param(20_000, "copy_on_write", marks=pytest.mark.slow),
        pytest.param(3_000, "merge_on_read", marks=pytest.mark.slow),
    ],
)
def test_kill_9_during_a_resync_completes_it_exactly(fresh_database, tmp_path, rows, mode) -> None:
    """`tidemark resync` against the running pipeline, which is killed half-way through the
    snapshot; rows change while it runs and while the pipeline is down. After the restart
    the snapshot completes: the lake equals the source and no row got a version it should
    not have (a re-read identical row is no event). Also with live and forensic written as
    deletion vectors (the keys the resync did not see are found among rows DVs left)."""
    url = fresh_database()
    audited_table(url, TABLE, rows)
    name = unique_name()
    config = _config(
        tmp_path,
        url,
        name,
        debezium={"properties": {"incremental.snapshot.chunk.size": str(rows // 20)}},
        write_mode={"*": mode},
    )
    lake, state = tmp_path / "lake", tmp_path / "state"
    model = Versions()
    try:
        with Pipeline(config, state, tmp_path / "run.log") as pipe:
            pipe.start()
            wait_caught_up(load_config(config), check=lambda: _alive(pipe))
            model.resnapshot(url, TABLE)
            asked = _tidemark(
                "resync", "--config", str(config), "--table", TABLE, "--no-wait", state=state
            )
            assert asked.returncode == 0, asked.stderr
            churn(url, TABLE, seed=1, size=100)

            def half_way() -> bool:
                record = record_of(load_config(config))
                arming = record.arming.get(LAKE_TABLE) if record else None
                return bool(arming and arming.rows >= rows // 10)

            _until(
                half_way, timeout=180, what="half the resync", alive=lambda: _alive(pipe), dump=pipe
            )
            pipe.kill()
            churn(url, TABLE, seed=2, size=100)
            pipe.start()
            wait_caught_up(load_config(config), timeout=240, check=lambda: _alive(pipe))
            record = record_of(load_config(config))
            assert record is not None and LAKE_TABLE in record.armed and not record.arming
            assert record.armed[LAKE_TABLE].startswith("tidemark-")  # the resync's snapshot
            # once more, watching it to the end (rich progress, exit 0): nothing changes
            ops = changelog_ops(str(lake), LAKE_TABLE)
            watched = _tidemark("resync", "--config", str(config), state=state, timeout=240)
            assert watched.returncode == 0 and "resync: done" in watched.stderr, watched.stderr
            assert changelog_ops(str(lake), LAKE_TABLE) == ops
            assert pipe.terminate() == 0, pipe.log.read_text()[-3000:]
        verify_config(load_config(config))
        model.stream(url)
        assert_versions(model, str(lake), TABLE, LAKE_TABLE)
        assert changelog_ops(str(lake), LAKE_TABLE).get("r") == rows  # the first snapshot's
        if mode == "merge_on_read":  # the changes really went in as deletion vectors
            for layer in ("live", "forensic"):
                state = LogState.load(open_store(f"{lake}/{layer}/{LAKE_TABLE}"))
                assert any(entry.dv is not None for entry in state.files.values()), layer
    finally:
        drop_pipeline_slot(url, name)


@pytest.mark.slow  # long; a lake restored from a copy stays in test_positions (default)
@pytest.mark.parametrize("rows", SIZES)
def test_a_table_restored_from_a_copy_is_resnapshotted_and_survives_kill_9(
    fresh_database, tmp_path, rows
) -> None:
    """One table's lake folders restored from an older copy: start-up snapshots that table
    again while streaming goes on; killed half-way, the restart completes it; the rows
    deleted since the copy are closed, changed ones get one version."""
    url = fresh_database()
    audited_table(url, TABLE, rows)
    name = unique_name()
    config = _config(
        tmp_path,
        url,
        name,
        debezium={"properties": {"incremental.snapshot.chunk.size": str(rows // 20)}},
        snapshot={"*": {"loader": "debezium"}},  # Debezium's incremental snapshot
    )
    lake, state = tmp_path / "lake", tmp_path / "state"
    model = Versions()
    try:
        with Pipeline(config, state, tmp_path / "run.log") as pipe:
            pipe.start()
            wait_caught_up(load_config(config), check=lambda: _alive(pipe))
            assert pipe.terminate() == 0
            model.resnapshot(url, TABLE)
            copy = tmp_path / "copy"
            for layer in ("changelog", "live", "forensic"):
                shutil.copytree(lake / layer / LAKE_TABLE, copy / layer)
            pipe.start()
            churn(url, TABLE, seed=1, size=rows)
            wait_caught_up(load_config(config), check=lambda: _alive(pipe))
            assert pipe.terminate() == 0
            for layer in ("changelog", "live", "forensic"):
                shutil.rmtree(lake / layer / LAKE_TABLE)
                shutil.copytree(copy / layer, lake / layer / LAKE_TABLE)
            pipe.start()

            def half_way() -> bool:
                record = record_of(load_config(config))
                arming = record.arming.get(LAKE_TABLE) if record else None
                return bool(arming and arming.rows >= rows // 10)

            _until(
                half_way,
                timeout=180,
                what="half the snapshot",
                alive=lambda: _alive(pipe),
                dump=pipe,
            )
            pipe.kill()
            pipe.start()
            wait_caught_up(load_config(config), timeout=240, check=lambda: _alive(pipe))
            assert pipe.terminate() == 0, pipe.log.read_text()[-3000:]
        assert "restored from a copy" in pipe.log.read_text()
        verify_config(load_config(config))
        model.resnapshot(url, TABLE)
        assert_versions(model, str(lake), TABLE, LAKE_TABLE)
    finally:
        drop_pipeline_slot(url, name)

"""The run lock (`tidemark/lock.py`): one `run`/`up` per pipeline and per local lake.

A second holder is refused with the first's pid, host and start time; the lock is the
kernel's (`flock`), so a holder killed with SIGKILL leaves nothing that blocks the next one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidemark.lock import AlreadyRunning, PipelineLock, is_running

HOLD = """
import sys, time
from pathlib import Path
from tidemark.lock import PipelineLock
with PipelineLock(Path(sys.argv[1]), "demo", sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(state: Path, lake: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state), str(lake)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_naming_the_first_and_kill_9_frees_it(tmp_path) -> None:
    state, lake = tmp_path / "state", tmp_path / "lake"
    first = _holder(state, lake)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            with PipelineLock(state, "demo", str(lake)):
                pass
        assert f"pid {first.pid}" in refused.value.message and "since" in refused.value.message
        assert refused.value.exit_code == 2
        # the same lake under another pipeline name (or state directory) is refused too
        with pytest.raises(AlreadyRunning, match="lake"):
            with PipelineLock(tmp_path / "other-state", "other", str(lake)):
                pass
        assert is_running(state, "demo", str(lake)) is not None
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    deadline = time.monotonic() + 10
    while is_running(state, "demo", str(lake)) is not None:
        assert time.monotonic() < deadline, "the lock outlived its killed holder"
        time.sleep(0.05)
    with PipelineLock(state, "demo", str(lake)):
        assert (state / "locks" / "demo.lock").read_text()


def test_an_object_store_lake_is_locked_by_pipeline_only(tmp_path) -> None:
    with PipelineLock(tmp_path, "demo", "s3://bucket/lake"):
        with pytest.raises(AlreadyRunning, match="pipeline `demo`"):
            with PipelineLock(tmp_path, "demo", "s3://bucket/lake"):
                pass
        with PipelineLock(tmp_path, "other", "s3://bucket/lake"):
            pass

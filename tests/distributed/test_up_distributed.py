"""`tidemark up --distributed` as a user runs it (a subprocess, its own state directory):
the local Postgres, Tansu, a real Kafka Connect with Debezium, two workers and the
simulator; a worker killed (-9) mid-run is started again by the supervisor; Ctrl+C (SIGINT)
drains and stops everything; `verify` is clean. Run again, it resumes on a new memory
broker (the next topic epoch) and `verify` is clean again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.connect, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TIDEMARK_STATE": str(tmp / "state")}


def _up(tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidemark",
            "up",
            "--distributed",
            "--no-serve",
            "--rate",
            "200",
            "--lake",
            str(tmp / "lake"),
            *args,
        ],
        cwd=ROOT,
        env=_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _verify(tmp: Path) -> subprocess.CompletedProcess[str]:
    config = tmp / "state" / "up-distributed" / "pipeline.yaml"
    return subprocess.run(
        [sys.executable, "-m", "tidemark", "verify", "--config", str(config)],
        cwd=ROOT,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _worker_pids(tmp: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmdline and any(str(tmp).encode() in part for part in cmdline):
            found.append(int(proc.name))
    return found


def test_up_distributed_supervises_stops_and_resumes(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    try:
        first = _up(tmp_path)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and len(_worker_pids(tmp_path)) < 2:
            time.sleep(1)
        time.sleep(40)  # the snapshot, then the simulator runs
        victims = _worker_pids(tmp_path)
        assert len(victims) == 2
        os.kill(victims[0], signal.SIGKILL)
        time.sleep(20)
        assert len(_worker_pids(tmp_path)) == 2, "the supervisor did not start the worker again"
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=400)
        assert first.returncode == 0, out[-3000:]
        assert "stopped: simulator wrote" in out, out[-3000:]
        assert "exited; starting it again" in out, out[-3000:]
        assert not _worker_pids(tmp_path)
        checked = _verify(tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]

        second = _up(tmp_path, "--duration", "30")
        out, _ = second.communicate(timeout=900)
        assert second.returncode == 0, out[-3000:]
        config = yaml.safe_load(
            (tmp_path / "state" / "up-distributed" / "pipeline.yaml").read_text()
        )
        assert config["kafka"]["epoch"] == 1  # a new memory broker: the next topic epoch
        checked = _verify(tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
    finally:
        for pid in _worker_pids(tmp_path):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(
            [sys.executable, "-m", "tidemark", "db", "stop"],
            cwd=ROOT,
            env=_env(tmp_path),
            capture_output=True,
            timeout=120,
        )

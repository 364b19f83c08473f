"""kill -9 the capture process mid-stream, restart it: nothing is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

ROOT = Path(__file__).resolve().parent.parent


def spawn(url: str, state: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.capture_child",
            url,
            "public.events",
            str(state),
            "crash",
            str(out),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def delivered(out: Path) -> list[int]:
    if not out.exists():
        return []
    return [int(line) for line in out.read_text().split()]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow  # long; the kill story (test_reliability) covers it in the default run
def test_kill_9_mid_stream_then_restart_misses_nothing(fresh_database, tmp_path):
    url = fresh_database()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE public.events (id int PRIMARY KEY, body text)")
    cur.execute("INSERT INTO events SELECT g, 'snap' FROM generate_series(1, 2000) g")
    state, out = tmp_path / "state", tmp_path / "delivered.txt"
    total = 2000 + 400 * 10

    def write_load() -> None:
        with psycopg2.connect(url) as writer:
            writer.autocommit = True
            with writer.cursor() as w:
                for batch in range(400):
                    first = 2001 + batch * 10
                    w.execute(
                        "INSERT INTO events SELECT g, 'live' FROM generate_series(%s, %s) g",
                        (first, first + 9),
                    )
                    time.sleep(0.005)

    child = spawn(url, state, out)
    try:
        wait_for(lambda: len(delivered(out)) >= 2000, 90, "the snapshot")
        load = threading.Thread(target=write_load)
        load.start()
        wait_for(lambda: len(delivered(out)) >= 3000, 90, "streaming to start")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        load.join()
        killed_at = len(delivered(out))
        assert 3000 <= killed_at < total  # killed mid-stream, rows still to come
        child = spawn(url, state, out)
        wait_for(lambda: set(delivered(out)) >= set(range(1, total + 1)), 120, "the rest")
    finally:
        child.kill()
        child.wait()
    ids = delivered(out)
    assert set(ids) == set(range(1, total + 1))

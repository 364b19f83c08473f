"""Embedding the runner: `build_runner` + `run_until` in a process of one's own.

A program that embeds Tidemark (the benchmarks do) builds the runner without `tidemark run`'s
start-up. Its second start resumes from the lake's offsets, which are written for the engine
through the JVM before the engine opens: the runner must start the JVM itself (it once
failed there with `JVMNotRunning`). Each start is a fresh process, as an embedder's is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, threading, time
from pathlib import Path
from deltalake import DeltaTable
from tidemark.config import parse_config
from tidemark.pipeline import build_runner, run_until

config = parse_config(json.loads(sys.argv[1]))
want = int(sys.argv[2])
stop = threading.Event()
runner, lake = build_runner(config, state=Path(sys.argv[3]))
failure = []
def run():
    try:
        run_until(runner, stop)
    except BaseException as exc:
        failure.append(exc)
thread = threading.Thread(target=run, daemon=True)
thread.start()
live = Path(config.lake) / "live" / "e.public.items"
deadline = time.monotonic() + 120
rows = 0
while time.monotonic() < deadline and thread.is_alive():
    if (live / "_delta_log").is_dir():
        rows = DeltaTable(str(live)).to_pyarrow_dataset().count_rows()
        if rows == want:
            break
    time.sleep(0.3)
stop.set()
thread.join(60)
lake.close()
print(json.dumps({"rows": rows, "failure": repr(failure[0]) if failure else None}))
"""


def _sql(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def test_an_embedded_runner_resumes_from_the_lake_in_a_new_process(fresh_database, tmp_path):
    dsn = fresh_database()
    _sql(dsn, "CREATE TABLE items (id int PRIMARY KEY)", "INSERT INTO items VALUES (1), (2)")
    config = {
        "pipeline": "embedded",
        "lake": str(tmp_path / "lake"),
        "sources": [
            {
                "name": "e",
                "kind": "postgres",
                "dsn": dsn,
                "tables": ["public.items"],
                "ddl_capture": False,
            }
        ],
        "batching": {"max_events": 1000, "max_latency_ms": 200},
        "debezium": {"heartbeat_ms": 500},
    }

    def start(want: int) -> dict:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(config), str(want), str(tmp_path / "st")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        return json.loads(child.stdout.strip().splitlines()[-1])

    assert start(2) == {"rows": 2, "failure": None}
    _sql(dsn, "INSERT INTO items VALUES (3)")
    assert start(3) == {"rows": 3, "failure": None}, "the second start resumes from the lake"

"""`tidemark tail` prints change events as JSON lines and cleans up its slot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]
ROOT = Path(__file__).resolve().parent.parent


def test_tail_prints_json_lines_then_drops_its_slot(fresh_database, tmp_path):
    url = fresh_database()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text)")
    cur.execute("INSERT INTO items VALUES (1, 'old')")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "pipeline: tailtest\nsources:\n  - name: shop\n    kind: postgres\n"
        "    dsn: ${SHOP_DSN}\n    tables: [public.items]\n"
    )
    env = {**os.environ, "SHOP_DSN": url, "TIDEMARK_STATE": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidemark",
            "tail",
            "--config",
            str(config),
            "--snapshot",
            "--max-events",
            "3",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = proc.stdout.readline()  # the snapshot row: streaming has begun
    next_id = 2
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        cur.execute("INSERT INTO items VALUES (%s, 'new')", (next_id,))
        next_id += 1
        time.sleep(0.3)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "tail: 1 source(s), Java 1" in err.decode()  # says which Java runs Debezium
    lines = [json.loads(line) for line in (first + out).decode().splitlines()]
    assert len(lines) == 3
    assert lines[0] == {
        **lines[0],
        "op": "r",
        "table": "shop.public.items",
        "key": {"id": 1},
        "after": {"id": 1, "name": "old"},
    }
    assert [(line["op"], line["key"]) for line in lines[1:]] == [("c", {"id": 2}), ("c", {"id": 3})]
    assert all({"position", "tx", "before", "ts"} <= line.keys() for line in lines)
    positions = [line["position"] for line in lines]
    assert positions == sorted(positions) and all(len(p) == 40 for p in positions)
    cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '%tail%'")
    assert cur.fetchone()[0] == 0


def test_tail_reports_a_bad_config_in_one_line(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("pipeline: x\nsources: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "tidemark", "tail", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TIDEMARK_STATE": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: sources")

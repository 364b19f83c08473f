"""`tidemark up` without a terminal, then `verify`, `status` and `query`; run again: resume.

Runs the CLI as a user would (a subprocess, `python -m tidemark`), with its own state
directory (own local cluster) and lake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

ROOT = Path(__file__).resolve().parents[2]


def _cli(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_STATE": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def stops_its_database(tmp_path: Path):
    """`up` leaves its local Postgres running (verify and status need it): stop it after."""
    yield
    _cli(tmp_path, "db", "stop")


def test_up_then_verify_status_query_and_resume(tmp_path: Path, stops_its_database) -> None:
    tmp_path.chmod(0o755)
    lake = str(tmp_path / "lake")
    first = _cli(tmp_path, "up", "--duration", "10", "--rate", "300", "--lake", lake)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stopped: simulator wrote" in first.stderr
    assert "gold.customer_360, a sample" in first.stdout  # the demo prints its gold model
    assert "customer_id" in first.stdout and "total_balance" in first.stdout
    checked = _cli(tmp_path, "verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
    assert checked.stdout.count("ok   bank.public.") == 4

    status = json.loads(_cli(tmp_path, "status", "--json").stdout)
    tables = {t["table"]: t for t in status["sources"][0]["tables"]}
    assert set(tables) == {
        f"bank.public.{t}" for t in ("customers", "addresses", "accounts", "transactions")
    }
    assert tables["bank.public.transactions"]["rows"]["changelog"] > 0
    assert all(t["dead_letters"] == 0 for t in tables.values())
    assert "status page: http://127.0.0.1:" in first.stderr  # the newcomer is told where
    assert status["breaches"] == []  # caught up at the end of `up`: every layer fresh

    def count(sql: str) -> int:
        return json.loads(_cli(tmp_path, "query", "--format", "json", sql).stdout)["n"]

    snapshot_rows = "SELECT count(*) AS n FROM changelog.customers WHERE _tm_op = 'r'"
    before = count("SELECT count(*) AS n FROM changelog.transactions")
    snapshots = count(snapshot_rows)
    second = _cli(tmp_path, "up", "--duration", "5", "--rate", "300", "--lake", lake)
    assert second.returncode == 0, second.stderr[-3000:]
    assert count("SELECT count(*) AS n FROM changelog.transactions") > before
    assert count(snapshot_rows) == snapshots  # resumed from its offsets: no second snapshot
    again = _cli(tmp_path, "verify")
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    lineage = _cli(tmp_path, "lineage", "customer_360")
    assert lineage.returncode == 0, lineage.stderr
    assert 'live."bank.public.customers".email  [pii: hash]' in lineage.stdout
    gold = count("SELECT count(*) AS n FROM gold.customer_360")
    assert gold == count("SELECT count(*) AS n FROM live.customers")

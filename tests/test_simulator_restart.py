"""On a cluster of its own: exact commit times, and riding through a Postgres restart.

This cluster runs with `track_commit_timestamp = on`, so the ledger's `commit_ts` is the
server's own commit time (the shared test cluster has it off: clock just before COMMIT).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime

import psycopg2
import pytest

from tests.simulator_support import (
    BALANCE_MISMATCHES,
    decoded_changes,
    ledger_keys,
    query,
    read_ledger,
)
from tidemark.connectors.postgres.cluster import LocalCluster
from tidemark.simulator import Simulator

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("simpg")
    root.chmod(0o755)
    cluster = LocalCluster(root / "pg")
    url = cluster.start()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("ALTER SYSTEM SET track_commit_timestamp = on")
    conn.close()
    cluster.restart()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")


def _pg_ts(text: str) -> datetime:
    return datetime.fromisoformat(text + ("00" if text[-3] in "+-" else ""))


def test_ledger_commit_ts_is_the_servers_commit_time(own_cluster, tmp_path):
    url = own_cluster.url()
    ledger = tmp_path / "ledger.jsonl"
    sim = Simulator(url, profile="customers", workers=2, max_changes=600, ledger=ledger)
    sim.setup()
    with decoded_changes(url) as committed:
        sim.run()
    real = {tx: _pg_ts(ts) for _, _, _, tx, ts in committed}
    lines = read_ledger(ledger)
    assert len(lines) == 600
    assert all(datetime.fromisoformat(x["commit_ts"]) == real[x["tx"]] for x in lines)


def test_restart_mid_run_reconnects_and_ledger_matches_wal(own_cluster, tmp_path):
    url = own_cluster.url()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("CREATE DATABASE restart_bank")
    conn.close()
    url = own_cluster.url("restart_bank")
    ledger = tmp_path / "ledger.jsonl"
    sim = Simulator(url, profile="bank", workers=3, ledger=ledger)
    sim.setup()
    stop, result = threading.Event(), {}
    with decoded_changes(url) as committed:
        thread = threading.Thread(target=lambda: result.setdefault("s", sim.run(stop)))
        thread.start()
        time.sleep(1.0)
        own_cluster.restart()  # fast shutdown: every session is killed, in-flight work lost
        time.sleep(1.5)
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    summary = result["s"]
    assert summary.reconnects >= 3  # each worker lost its connection and came back
    lines = read_ledger(ledger)
    assert summary.total == len(lines) == len(committed)
    assert ledger_keys(lines) == Counter((t, k, op, tx) for t, k, op, tx, _ in committed)
    assert query(url, BALANCE_MISMATCHES) == [(0,)]

"""The simulator rides through a Postgres restart and its ledger stays exact."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from connectors.postgres.cluster import LocalCluster
from simulator import Simulator
from tests.simulator_support import (
    BALANCE_MISMATCHES,
    decoded_changes,
    ledger_keys,
    query,
    read_ledger,
)

pytestmark = pytest.mark.postgres


def test_restart_mid_run_reconnects_and_ledger_matches_wal(tmp_path):
    tmp_path.chmod(0o755)
    cluster = LocalCluster(tmp_path / "pg")
    url = cluster.start()
    ledger = tmp_path / "ledger.jsonl"
    try:
        sim = Simulator(url, profile="bank", workers=3, ledger=ledger)
        sim.setup()
        stop, result = threading.Event(), {}
        with decoded_changes(url) as committed:
            thread = threading.Thread(target=lambda: result.setdefault("s", sim.run(stop)))
            thread.start()
            time.sleep(1.5)
            cluster.restart()  # fast shutdown: every session is killed, in-flight work lost
            time.sleep(2.0)
            stop.set()
            thread.join(timeout=60)
        assert not thread.is_alive()
        summary = result["s"]
        assert summary.reconnects >= 3  # each worker lost its connection and came back
        lines = read_ledger(ledger)
        assert summary.total == len(lines) == len(committed)
        assert ledger_keys(lines) == Counter((t, k, op, tx) for t, k, op, tx, _ in committed)
        assert query(url, BALANCE_MISMATCHES) == [(0,)]
    finally:
        cluster.stop(mode="immediate")

"""Helpers for the reliability suite: an own cluster, the pipeline as a child process,
the simulator with a ledger in a thread, and the ledger-vs-lake comparison."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import yaml

from tidemark.simulator.runner import Simulator

ROOT = Path(__file__).resolve().parents[2]
TABLES = ["public.customers", "public.addresses", "public.accounts", "public.transactions"]


def write_config(
    path: Path,
    *,
    url: str,
    lake: Path,
    tables: list[str],
    name: str,
    write_mode: str = "copy_on_write",
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": name,
                "lake": str(lake),
                "sources": [{"name": "bank", "kind": "postgres", "dsn": url, "tables": tables}],
                "batching": {"max_events": 2000, "max_latency_ms": 300},
                "debezium": {"heartbeat_ms": 500},
                "write_mode": {"*": write_mode},
            }
        )
    )
    return path


def set_up(config: Path, state: Path) -> None:
    """`tidemark setup --yes`: what a user runs once so `run` may start (the DDL capture)."""
    subprocess.run(
        [sys.executable, "-m", "tidemark", "setup", "--config", str(config), "--yes"],
        cwd=ROOT,
        env={**os.environ, "TIDEMARK_STATE": str(state)},
        check=True,
        capture_output=True,
    )


@dataclass
class Pipeline:
    """`tidemark run` as a child process (so it can be killed with SIGKILL)."""

    config: Path
    state: Path
    log: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        env = {**os.environ, "TIDEMARK_STATE": str(self.state)}
        if not self.starts:
            set_up(self.config, self.state)
        handle = open(self.log, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tidemark", "-v", "run", "--config", str(self.config)],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 90) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        """Never leave a pipeline process behind, whatever the test did."""
        if self.alive():
            self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def wait_streaming(url: str, slot: str, *, timeout: float = 120, pipeline: Pipeline) -> None:
    """Until the slot's WAL sender streams (Debezium finished its snapshot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert pipeline.alive(), pipeline.log.read_text()[-3000:]
        try:
            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT r.state FROM pg_replication_slots s JOIN pg_stat_replication r "
                    "ON r.pid = s.active_pid WHERE s.slot_name = %s",
                    (slot,),
                )
                row = cur.fetchone()
            if row and row[0] == "streaming":
                return
        except psycopg2.OperationalError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"slot {slot} never streamed; log: {pipeline.log.read_text()[-3000:]}")


@dataclass
class SimulatorThread:
    url: str
    ledger: Path
    rate: float = 300.0
    stop: threading.Event = field(default_factory=threading.Event)
    error: list = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        sim = Simulator(self.url, profile="bank", workers=2, rate=self.rate, ledger=self.ledger)

        def body():
            try:
                sim.run(self.stop)
            except BaseException as exc:
                self.error.append(exc)

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    def finish(self, *, tolerate: type[BaseException] | None = None) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(60)
        errors = [e for e in self.error if tolerate is None or not isinstance(e, tolerate)]
        assert not errors, errors


def ledger_changes(path: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        counts[(entry["table"], entry["key"]["id"], entry["op"], str(entry["tx"]))] += 1
    return counts


def lake_changes(lake: Path, tables: list[str]) -> collections.Counter:
    from deltalake import DeltaTable

    counts: collections.Counter = collections.Counter()
    for table in tables:
        uri = lake / "changelog" / f"bank.{table}"
        if not (uri / "_delta_log").exists():
            continue
        data = DeltaTable(str(uri)).to_pyarrow_table(columns=["id", "_tm_op", "_tm_tx_id"])
        for row in data.to_pylist():
            if row["_tm_op"] != "r":
                counts[(table, row["id"], row["_tm_op"], row["_tm_tx_id"])] += 1
    return counts

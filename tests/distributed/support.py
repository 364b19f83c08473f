"""Helpers for the distributed-runtime tests: publish real Debezium records the way Kafka
Connect does, run `tidemark worker` processes, read the lake back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml
from confluent_kafka import Producer
from deltalake import DeltaTable

from connectors.debezium.records import RawRecord

ROOT = Path(__file__).resolve().parents[2]


def publish(bootstrap: str, records: Iterable[RawRecord], *, skip_heartbeats: bool = True) -> int:
    """Produce records like Kafka Connect: topic = destination, key = the JSON key, and
    Java's default partitioner (murmur2 of the key bytes), so one key stays in one partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True, "linger.ms": 10})
    count = 0
    for record in records:
        if skip_heartbeats and record.destination.startswith("__debezium-heartbeat"):
            continue
        key, value = record.enveloped()
        while True:
            try:
                producer.produce(record.destination,
                                 key=None if key is None else key.encode(),
                                 value=None if value is None else value.encode())
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.5)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return count


@dataclass
class WorkerProcess:
    """One `tidemark worker` subprocess."""

    process: subprocess.Popen
    stats: Path
    log: Path

    def read_stats(self) -> dict:
        try:
            return json.loads(self.stats.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no final commit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def write_config(path: Path, *, pipeline: str, lake: Path, dsn: str, tables: Sequence[str],
                 bootstrap: str, source: str = "src", max_events: int = 5000,
                 max_latency_ms: int = 300, live_prefix: str | None = None,
                 group: str | None = None) -> Path:
    kafka: dict = {"bootstrap": bootstrap}
    if live_prefix:
        kafka["live_topic_prefix"] = live_prefix
    if group:
        kafka["group"] = group
    path.write_text(yaml.safe_dump({
        "pipeline": pipeline, "lake": str(lake),
        "sources": [{"name": source, "kind": "postgres", "dsn": dsn, "tables": list(tables)}],
        "batching": {"max_events": max_events, "max_latency_ms": max_latency_ms},
        "kafka": kafka}))
    return path


def start_worker(config: Path, workdir: Path, name: str, *, session_timeout: float = 6.0,
                 extra: Sequence[str] = ()) -> WorkerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    stats, log = workdir / f"{name}.stats.json", workdir / f"{name}.log"
    env = {**os.environ, "TIDEMARK_STATE": str(workdir / f"state-{name}")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "-v", "worker", "--config", str(config),
         "--session-timeout", str(session_timeout), "--stats", str(stats), *extra],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    return WorkerProcess(process, stats, log)


def wait_for(condition, *, timeout: float, what: str, workers: Sequence[WorkerProcess] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for w in workers:
            if w.process.poll() is not None and w.process.returncode not in (0, -9):
                raise AssertionError(f"worker exited {w.process.returncode}:\n{w.tail()}")
        time.sleep(0.25)
    logs = "\n----\n".join(w.tail() for w in workers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def read_layer(lake: Path, layer: str, table: str) -> pa.Table | None:
    path = lake / layer / table
    if not DeltaTable.is_deltatable(str(path)):
        return None
    return DeltaTable(str(path)).to_pyarrow_table()

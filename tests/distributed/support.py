"""Helpers for the distributed-runtime tests: publish real Debezium records the way Kafka
Connect does, run `tidemark worker` processes, read the lake back."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import yaml
from deltalake import DeltaTable

from tidemark.connectors.kafka.produce import publish
from tidemark.stack.workers import WorkerProcess
from tidemark.stack.workers import start_worker as _start_worker

__all__ = ["publish", "read_layer", "start_worker", "wait_for", "write_config"]

ROOT = Path(__file__).resolve().parents[2]


def write_config(
    path: Path,
    *,
    pipeline: str,
    lake: Path,
    dsn: str,
    tables: Sequence[str],
    bootstrap: str,
    source: str = "src",
    max_events: int = 5000,
    max_latency_ms: int = 300,
    live_prefix: str | None = None,
    group: str | None = None,
) -> Path:
    kafka: dict = {"bootstrap": bootstrap}
    if live_prefix:
        kafka["live_topic_prefix"] = live_prefix
    if group:
        kafka["group"] = group
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": pipeline,
                "lake": str(lake),
                "sources": [
                    {"name": source, "kind": "postgres", "dsn": dsn, "tables": list(tables)}
                ],
                "batching": {"max_events": max_events, "max_latency_ms": max_latency_ms},
                "kafka": kafka,
            }
        )
    )
    return path


def start_worker(
    config: Path,
    workdir: Path,
    name: str,
    *,
    session_timeout: float = 6.0,
    extra: Sequence[str] = (),
) -> WorkerProcess:
    return _start_worker(
        config, workdir, name, session_timeout=session_timeout, extra=extra, cwd=ROOT
    )


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

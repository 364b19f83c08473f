"""Helpers for the loader's tests: databases, configs, lakes read back, a runner in a thread."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pyarrow as pa
from deltalake import DeltaTable

from tidemark.config import PipelineConfig, parse_config
from tidemark.kernel.names import path_segment
from tidemark.pipeline import build_runner, run_until
from tidemark.sinks.readers import read_table


def new_database(admin_url: str, make_url: Callable[[str], str]) -> str:
    name = f"l_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return make_url(name)


def execute(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def fetch(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def config_for(
    url: str, lake: Path, tables: list[str], *, name: str | None = None, **extra
) -> PipelineConfig:
    return parse_config(
        {
            "pipeline": name or f"p{uuid.uuid4().hex[:8]}",
            "lake": str(lake),
            "sources": [{"name": "src", "kind": "postgres", "dsn": url, "tables": tables}],
            "batching": {"max_events": 5000, "max_latency_ms": 300},
            "debezium": {"heartbeat_ms": 500},
            **extra,
        }
    )


def layer(lake: Path, name: str, table: str) -> pa.Table:
    """A layer of a lake table, read whole (deletion vectors applied)."""
    return read_table(DeltaTable(str(lake / name / path_segment(table))))


def exists(lake: Path, name: str, table: str) -> bool:
    return (lake / name / path_segment(table) / "_delta_log").is_dir()


class Running:
    """The production runner in a thread; `wait_for` a marker row, `stop`."""

    def __init__(self, config: PipelineConfig, state: Path, **options) -> None:
        self.stop_event = threading.Event()
        self.runner, self.lake = build_runner(config, state=state, stop=self.stop_event, **options)
        self.config = config
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._body, daemon=True)
        self.thread.start()

    def _body(self) -> None:
        try:
            run_until(self.runner, self.stop_event)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def wait_for(self, url: str, sync_table: str, marker: int, timeout: float = 180) -> None:
        """Insert `marker` into the sync table; return once the lake's live layer holds it
        (every change committed before it is then in the lake: batches commit in order)."""
        execute(url, f"INSERT INTO public.{sync_table} VALUES ({marker})")
        table = f"src.public.{sync_table}"
        lake = Path(self.config.lake)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None or not self.thread.is_alive():
                raise AssertionError(f"the pipeline stopped: {self.error!r}")
            if exists(lake, "live", table):
                if marker in layer(lake, "live", table).column("id").to_pylist():
                    return
            time.sleep(0.2)
        raise AssertionError(f"marker {marker} did not reach the lake in {timeout} s")

    def wait_streaming(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.runner.heartbeats == 0:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError(f"never streamed: {self.error!r}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(120)
        self.lake.close()
        assert self.error is None, self.error

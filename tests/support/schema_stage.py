"""A running pipeline with Tidemark's DDL capture, for the schema-change stories.

`Stage` owns one database of the session cluster, the embedded runner on a thread (real
Debezium), the simulator writing to its own tables beside it, and the helpers the stories
use: run SQL, take an instant between commits, read the source's rows, read forensic as of
an instant, and verify one table against the source.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from tidemark.config import PipelineConfig, parse_config
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.kernel import columns as c
from tidemark.pipeline import build_runner, run_until
from tidemark.simulator.runner import Simulator
from tidemark.sinks.lake import Lake
from tidemark.sinks.readers import read_table
from tidemark.stream_processors.embedded.runner import EmbeddedRunner
from tidemark.verify import TableCheck, verify_source

SIMULATED = ["public.customers", "public.accounts", "public.transactions"]


@dataclass
class Stage:
    """One pipeline over one database; see the module docstring."""

    dsn: str
    lake: Path
    state: Path
    tables: list[str]
    pipeline: str = field(default_factory=lambda: f"s{uuid.uuid4().hex[:10]}")
    write_mode: str = "copy_on_write"
    runner: EmbeddedRunner | None = None
    writer: Lake | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    simulator_stop: threading.Event = field(default_factory=threading.Event)
    simulator: threading.Thread | None = None

    # -- the pipeline ------------------------------------------------------------------------
    def config(self, tables: list[str] | None = None) -> PipelineConfig:
        return parse_config(
            {
                "pipeline": self.pipeline,
                "lake": str(self.lake),
                "sources": [
                    {
                        "name": "src",
                        "kind": "postgres",
                        "dsn": self.dsn,
                        "tables": tables or self.tables,
                    }
                ],
                "batching": {"max_events": 5000, "max_latency_ms": 200},
                "write_mode": {"*": self.write_mode},
                "debezium": {"heartbeat_ms": 500},
            }
        )

    def start(self) -> None:
        self.stop = threading.Event()
        self.runner, self.writer = build_runner(self.config(), state=self.state)
        self.thread = threading.Thread(target=run_until, args=(self.runner, self.stop), daemon=True)
        self.thread.start()

    def wait_streaming(self, timeout: float = 180.0) -> None:
        """Until Debezium streams (its first heartbeat came): the snapshot is delivered."""
        deadline = time.monotonic() + timeout
        while self.runner is None or not self.runner.heartbeats:
            assert self.thread is not None and self.thread.is_alive(), "the runner stopped"
            assert time.monotonic() < deadline, "the pipeline did not start streaming"
            time.sleep(0.3)

    def halt(self) -> None:
        """Stop the runner (the batch in flight is committed) and close the lake."""
        if self.thread is not None:
            self.stop.set()
            self.thread.join(120)
            assert not self.thread.is_alive(), "the runner did not stop"
            self.thread = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def start_simulator(self, rate: float = 40.0) -> None:
        sim = Simulator(self.dsn, profile="bank", rate=rate, workers=1, seed=7)
        sim.setup()
        self.simulator = threading.Thread(
            target=sim.run, args=(self.simulator_stop,), daemon=True, name="stage-simulator"
        )
        self.simulator.start()

    def close(self) -> None:
        self.simulator_stop.set()
        if self.simulator is not None:
            self.simulator.join(60)
        self.halt()
        for _ in range(50):  # the walsender may hold the slot a moment after close()
            try:
                drop_slot(self.dsn, replication_name(self.pipeline, "src"))
                break
            except psycopg2.errors.ObjectInUse:
                time.sleep(0.2)

    # -- the source ----------------------------------------------------------------------------
    def sql(self, *statements: str) -> None:
        """Run each statement in its own transaction."""
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def instant(self) -> datetime:
        """The server's clock now: after every commit so far, before every later one."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT clock_timestamp()")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def rows(self, table: str, key: tuple[str, ...] = ("id",)) -> dict[tuple, dict[str, Any]]:
        """The source table's rows by key, as psycopg2 reads them."""
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT * FROM {table}")
                names = [d.name for d in cur.description]
                out = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()
        return {tuple(r[k] for k in key): r for r in out}

    # -- the lake ----------------------------------------------------------------------------
    def layer(self, layer: str, table: str) -> pa.Table:
        """One layer of a lake table (`table`: `schema.table`, or a table of `public`)."""
        name = table if "." in table else f"public.{table}"
        return read_table(DeltaTable(str(self.lake / layer / f"src.{name}")))  # applies DVs

    def as_of(
        self, table: str, instant: datetime, key: tuple[str, ...] = ("id",)
    ) -> dict[tuple, dict[str, Any]]:
        """Forensic as of `instant`: the versions with valid_from <= T < valid_to (or open)."""
        versions = self.layer("forensic", table)
        at = pa.scalar(instant, pa.timestamp("us", tz="UTC"))
        began = pc.less_equal(versions.column(c.VALID_FROM), at)
        ends = versions.column(c.VALID_TO)
        open_ = pc.or_kleene(pc.is_null(ends), pc.greater(ends, at))
        rows = versions.filter(pc.and_(began, open_)).to_pylist()
        found = [{k: v for k, v in r.items() if not c.is_metadata(k)} for r in rows]
        keyed = {tuple(r[k] for k in key): r for r in found}
        assert len(keyed) == len(found), f"{table}: two versions of one key as of {instant}"
        return keyed

    def verify(self, table: str, timeout: float = 120) -> TableCheck:
        """`tidemark verify` for one table (waits for the lake to reach the source)."""
        config = self.config([table])
        report = verify_source(config, config.sources[0], timeout=timeout)
        return report.tables[0]

    def dead_letters(self, table: str) -> list[dict[str, Any]]:
        path = self.lake / "_tidemark" / "dead_letters"
        if not DeltaTable.is_deltatable(str(path)):
            return []
        rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
        name = table if "." in table else f"public.{table}"
        return [r for r in rows if r["table"] == f"src.{name}"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (a.tzinfo is None) == (b.tzinfo is None) and a == b
    return bool(a == b)


def differences(
    source: dict[tuple, dict[str, Any]],
    lake: dict[tuple, dict[str, Any]],
    *,
    renamed: dict[str, str] | None = None,
) -> list[str]:
    """What differs between source rows and lake rows (by key, on the source's columns;
    `renamed` maps a source column to its name in the lake)."""
    renamed = renamed or {}
    out = []
    for key in sorted(set(source) | set(lake), key=repr):
        if key not in lake:
            out.append(f"{key} missing")
            continue
        if key not in source:
            out.append(f"{key} unexpected: {lake[key]}")
            continue
        for name, value in source[key].items():
            lake_name = renamed.get(name, name)
            if lake_name not in lake[key]:
                out.append(f"{key} lacks column {lake_name}")
            elif not _same(value, lake[key][lake_name]):
                out.append(f"{key}.{name}: source {value!r}, lake {lake[key][lake_name]!r}")
    return out

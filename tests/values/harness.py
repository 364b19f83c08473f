"""One pipeline run over every adversarial table (tests/values/cases.py), shared by the suite.

The run walks each table through four moments against a real Postgres and the real embedded
Debezium engine, with the production wiring (`tidemark.pipeline.build_runner`):
1. the snapshot of the rows present at start;
2. inserts streamed in one transaction per table, then waited for in the lake;
3. updates and deletes, each its own transaction, in later batches (the inserts were
   committed first: the first update of a committed row is the case that crashed);
4. a graceful stop and a restart of the pipeline, more changes, a stop.
Then `verify` compares every table with the source. A crash of the pipeline is recorded,
not raised, so each table's test says what happened to it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pyarrow as pa
from deltalake import DeltaTable

from tests.values.cases import CASES, Case
from tidemark.config import PipelineConfig, parse_config
from tidemark.pipeline import build_runner, run_until
from tidemark.verify import VerifyReport, verify_source

log = logging.getLogger(__name__)

SOURCE = "src"
SYNC = "tm_sync"


@dataclass
class Outcome:
    """What the shared run produced."""

    config: PipelineConfig
    url: str
    errors: list[str] = field(default_factory=list)
    report: VerifyReport | None = None
    dead_letters: pa.Table | None = None
    lake: Path | None = None

    def check(self, case: Case):  # -> TableCheck
        assert self.report is not None, f"verify did not run: {self.errors}"
        wanted = lake_table(case)
        for check in self.report.tables:
            if check.table == wanted:
                return check
        raise AssertionError(f"verify has no verdict for {wanted}")

    def dead_for(self, case: Case) -> list[dict]:
        if self.dead_letters is None:
            return []
        rows = self.dead_letters.to_pylist()
        return [r for r in rows if r["table"] == lake_table(case)]


def lake_table(case: Case) -> str:
    return f"{SOURCE}.{case.schema}.{case.name}"


def config_table(case: Case) -> str:
    """How the config names the table (quoted when the name needs it)."""
    simple = all(part.isidentifier() and part.isascii() for part in (case.schema, case.name))
    return f"{case.schema}.{case.name}" if simple else case.qualified


def _sql(case: Case, text: str) -> str:
    return text.replace("{t}", case.qualified).replace("{name}", case.name)


def _execute(url: str, statements: list[str]) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


class Run:
    """The pipeline in a thread of its own; `stop()` returns its error, if any."""

    def __init__(self, config: PipelineConfig, state: Path) -> None:
        self.runner, self.lake = build_runner(config, state=state)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._body, daemon=True)
        self.thread.start()

    def _body(self) -> None:
        try:
            run_until(self.runner, self.stop_event)
        except BaseException as exc:  # recorded for the tests to report
            log.exception("pipeline failed")
            self.error = exc

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> BaseException | None:
        self.stop_event.set()
        self.thread.join(120)
        self.lake.close()
        return self.error


def _wait_sync(url: str, lake: Path, marker: int, run: Run, timeout: float = 120) -> None:
    """Insert marker row `marker` and wait until the lake's live sync table holds it: every
    transaction committed before it is in the lake too (batches commit in order)."""
    _execute(url, [f"INSERT INTO public.{SYNC} VALUES ({marker})"])
    path = lake / "live" / f"{SOURCE}.public.{SYNC}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not run.alive:
            raise RuntimeError(f"the pipeline stopped: {run.error!r}")
        if (path / "_delta_log").exists():
            ids = DeltaTable(str(path)).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
            if marker in ids:
                return
        time.sleep(0.2)
    raise TimeoutError(f"marker {marker} did not reach the lake in {timeout:.0f} s")


def _create(url: str, cases: tuple[Case, ...]) -> None:
    statements = [f"CREATE TABLE public.{SYNC} (id int PRIMARY KEY)"]
    for case in cases:
        if case.prepare:
            statements.append(case.prepare)
        if case.schema != "public":
            statements.append(f'CREATE SCHEMA IF NOT EXISTS "{case.schema}"')
        statements.append(f"CREATE TABLE {case.qualified} ({case.columns})")
        if case.after_create:
            statements.append(_sql(case, case.after_create))
        if case.snapshot:
            statements.append(f"INSERT INTO {case.qualified} VALUES {', '.join(case.snapshot)}")
    _execute(url, statements)


def _step(url: str, cases: tuple[Case, ...], what: str, errors: list[str]) -> None:
    """Run each case's statements of one moment; a statement Postgres refuses is a test bug."""
    for case in cases:
        if what == "inserts":
            statements = (
                [f"INSERT INTO {case.qualified} VALUES {', '.join(case.inserts)}"]
                if case.inserts
                else []
            )
        else:
            statements = [_sql(case, s) for s in getattr(case, what)]
        try:
            _execute(url, statements)
        except psycopg2.Error as exc:
            errors.append(f"{case.name}: {what}: {exc}".splitlines()[0])


def run_cases(
    url: str, tmp: Path, cases: tuple[Case, ...] = CASES, *, name: str = "values"
) -> Outcome:
    """The whole shared run; see the module docstring."""
    lake = tmp / "lake"
    state = tmp / "state"
    _create(url, cases)
    config = parse_config(
        {
            "pipeline": name,
            "lake": str(lake),
            "sources": [
                {
                    "name": SOURCE,
                    "kind": "postgres",
                    "dsn": url,
                    "tables": [f"public.{SYNC}", *(config_table(c) for c in cases)],
                }
            ],
            "batching": {"max_events": 5000, "max_latency_ms": 300},
            "debezium": {"heartbeat_ms": 500},
        }
    )
    outcome = Outcome(config, url, lake=lake)
    run = Run(config, state)
    try:
        _wait_sync(url, lake, 1, run)
        _step(url, cases, "inserts", outcome.errors)
        _wait_sync(url, lake, 2, run)
        _step(url, cases, "changes", outcome.errors)
        _wait_sync(url, lake, 3, run)
        error = run.stop()
        if error is not None:
            outcome.errors.append(f"pipeline failed before the restart: {error!r}")
        run = Run(config, state)
        _step(url, cases, "later", outcome.errors)
        _wait_sync(url, lake, 4, run)
    except (RuntimeError, TimeoutError) as exc:
        outcome.errors.append(str(exc))
    finally:
        error = run.stop()
        if error is not None:
            outcome.errors.append(f"pipeline failed: {error!r}")
    outcome.report = verify_source(config, config.sources[0], timeout=10)
    dead = lake / "_tidemark" / "dead_letters"
    if (dead / "_delta_log").exists():
        outcome.dead_letters = DeltaTable(str(dead)).to_pyarrow_table()
    return outcome

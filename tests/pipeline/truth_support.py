"""Helpers for the positions suite (`test_positions*.py`): a source whose own history is
kept by a trigger, the embedded pipeline run in a thread of the test process (the JVM starts
once per session), and the versions a lake must hold per key, derived independently of
Debezium from that history.

The source history: an `AFTER` row trigger writes every change of the audited tables (key,
op, the new row as JSON) into `audit.history` in the same transaction, numbered by a
sequence. Changes to one key are serialized by its row lock, so per key the numbering is
commit order. From it `Versions` computes what each layer must hold: while the pipeline
streams, every change that alters a row is a version; across a gap the lake could not read
(lake deleted or restored, slot lost) only the state at the re-snapshot is (and rows gone by
then are closed).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from deltalake import DeltaTable

from tidemark.config import PipelineConfig, load_config
from tidemark.connectors.decode.position import lsn_position
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.kernel.positions import SourceRecord
from tidemark.pipeline import build_runner, run_until
from tidemark.sinks.batch_log import BatchLog
from tidemark.sinks.readers import read_table
from tidemark.startup import SourceStart
from tidemark.verify import lake_position, verify_source

AUDIT = """
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE IF NOT EXISTS audit.history (
    id bigserial PRIMARY KEY, tab text NOT NULL, key text NOT NULL, op text NOT NULL, img jsonb);
CREATE OR REPLACE FUNCTION audit.keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO audit.history (tab, key, op, img)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, OLD.id::text, 'd', NULL);
    RETURN OLD;
  END IF;
  INSERT INTO audit.history (tab, key, op, img)
  VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, NEW.id::text, 'w', to_jsonb(NEW));
  RETURN NEW;
END $$;
"""


def sql(url: str, *statements: str) -> list[tuple]:
    """Run statements in one autocommit connection; the last one's rows."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    rows: list[tuple] = []
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall() if cur.description else []
    finally:
        conn.close()
    return rows


def audited_table(url: str, table: str, rows: int) -> None:
    """`table` (id int key, v text, n int) with `rows` rows, its changes kept in the audit."""
    name = table.split(".")[1]
    sql(
        url,
        AUDIT,
        f"CREATE TABLE {table} (id int PRIMARY KEY, v text, n int)",
        f"INSERT INTO {table} SELECT g, 'v' || g, g FROM generate_series(1, {rows}) g",
        f"CREATE TRIGGER {name}_audit AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION audit.keep()",
    )


def churn(url: str, table: str, *, seed: int, size: int = 100) -> None:
    """A few transactions of updates (some changing nothing), deletes and inserts, over the
    keys up to 2,000 (so no transaction exceeds the test pipelines' batch bounds)."""
    base = 1_000_000 * seed
    scope = "id <= 2000"
    sql(
        url,
        f"UPDATE {table} SET v = v || '.{seed}' WHERE {scope} AND id % 7 = {seed % 7}",
        f"UPDATE {table} SET n = n WHERE {scope} AND id % 11 = {seed % 11}",  # no-ops
        f"DELETE FROM {table} WHERE {scope} AND id % 13 = {seed % 13}",
        f"INSERT INTO {table} SELECT g, 'new' || g, g FROM generate_series({base}, "
        f"{base + min(size, 2000) // 10}) g",
        f"UPDATE {table} SET n = n + 1 WHERE id = {base}",
    )


@dataclass
class Versions:
    """The versions (row images, in order) each key of each table must have in the lake."""

    versions: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    open: dict[tuple[str, str], dict | None] = field(default_factory=dict)
    seen: int = 0  # the last audit entry streamed into the model

    def stream(self, url: str) -> None:
        """Every change since the last call, as a streaming pipeline sees them."""
        for hid, tab, key, op, img in sql(
            url,
            f"SELECT id, tab, key, op, img FROM audit.history WHERE id > {self.seen} ORDER BY id",
        ):
            self._change((tab, key), None if op == "d" else img)
            self.seen = hid

    def resnapshot(self, url: str, table: str) -> None:
        """What a re-snapshot taken now brings: each key's current row (a version where it
        differs from the lake's), and the close of every open key that is gone."""
        current = {str(img["id"]): img for (img,) in sql(url, f"SELECT to_jsonb(t) FROM {table} t")}
        for key, img in current.items():
            self._change((table, key), img)
        for (tab, key), img in list(self.open.items()):
            if tab == table and img is not None and key not in current:
                self.open[(tab, key)] = None
        self.skip(url)

    def skip(self, url: str) -> None:
        """Changes made so far will not be streamed (the lake cannot read them)."""
        self.seen = sql(url, "SELECT coalesce(max(id), 0) FROM audit.history")[0][0]

    def forget(self, table: str) -> None:
        """The lake lost everything of `table`."""
        for store in (self.versions, self.open):
            for key in [k for k in store if k[0] == table]:
                del store[key]

    def _change(self, key: tuple[str, str], img: dict | None) -> None:
        if img is None:
            self.open[key] = None
        elif self.open.get(key) != img:
            self.versions.setdefault(key, []).append(img)
            self.open[key] = img

    def expected(self, table: str) -> dict[str, list[tuple[dict, bool]]]:
        out = {}
        for (tab, key), images in self.versions.items():
            if tab == table:
                last = len(images) - 1
                out[key] = [
                    (img, i == last and self.open.get((tab, key)) is not None)
                    for i, img in enumerate(images)
                ]
        return out


def lake_versions(lake: str, lake_table: str) -> dict[str, list[tuple[dict, bool]]]:
    """Forensic versions per key: (row image, open), in order of validity."""
    uri = f"{lake}/forensic/{lake_table}"
    if not DeltaTable.is_deltatable(uri):
        return {}
    columns = ["id", "v", "n", "_tm_valid_from", "_tm_valid_to", "_tm_position"]
    rows = read_table(DeltaTable(uri), columns=columns).to_pylist()  # applies DVs (MoR)
    rows.sort(key=lambda r: (r["id"], r["_tm_valid_from"], r["_tm_position"]))
    out: dict[str, list[tuple[dict, bool]]] = {}
    for r in rows:
        out.setdefault(str(r["id"]), []).append(
            ({"id": r["id"], "v": r["v"], "n": r["n"]}, r["_tm_valid_to"] is None)
        )
    return out


def changelog_ops(lake: str, lake_table: str) -> dict[str, int]:
    uri = f"{lake}/changelog/{lake_table}"
    if not DeltaTable.is_deltatable(uri):
        return {}
    ops: dict[str, int] = {}
    for op in DeltaTable(uri).to_pyarrow_table(columns=["_tm_op"]).column("_tm_op").to_pylist():
        ops[op] = ops.get(op, 0) + 1
    return ops


def write_config(path: Path, *, url: str, lake: Path, tables: list[str], name: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": name,
                "lake": str(lake),
                "sources": [{"name": "src", "kind": "postgres", "dsn": url, "tables": tables}],
                "batching": {"max_events": 500, "max_latency_ms": 200},
                "debezium": {"heartbeat_ms": 300},
            }
        )
    )
    return path


@dataclass
class Pipe:
    """The embedded pipeline of a config, run in a thread (`start`/`stop`, like SIGTERM)."""

    config_path: Path
    state: Path
    starts: list[SourceStart] = field(default_factory=list)
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    @property
    def config(self) -> PipelineConfig:
        return load_config(self.config_path)

    def start(self) -> SourceStart:
        runner, lake = build_runner(
            self.config, state=self.state, on_start=lambda _s, start: self.starts.append(start)
        )
        self._stop = threading.Event()
        stop = self._stop

        def body() -> None:
            try:
                run_until(runner, stop)
            except BaseException as exc:
                self._error.append(exc)
            finally:
                lake.close()

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()
        return self.starts[-1]

    def stop(self) -> None:
        if self._thread is not None and self._stop is not None:
            self._stop.set()
            self._thread.join(120)
            self._thread = None
        assert not self._error, self._error

    def record(self) -> SourceRecord | None:
        return record_of(self.config)

    def wait(self, timeout: float = 120.0) -> None:
        """Until the lake holds everything committed at the source so far (and no snapshot
        is under way)."""
        wait_caught_up(self.config, timeout=timeout, check=self._check)

    def _check(self) -> None:
        assert not self._error, self._error

    def verify(self) -> None:
        verify_config(self.config)

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None and self._stop is not None:
            self._stop.set()
            self._thread.join(120)


def record_of(config: PipelineConfig) -> SourceRecord | None:
    """What the lake holds of the source `src`."""
    text = BatchLog(config.lake, app_id=config.app_id).last_sources().get("src")
    return None if text is None else SourceRecord.from_json(text)


def wait_caught_up(
    config: PipelineConfig, *, timeout: float = 120.0, check: Callable[[], None] = lambda: None
) -> None:
    """Until the lake holds everything committed at the source so far and no snapshot is
    under way (the pipeline's idle checkpoints carry its position past the WAL end).

    Every table must be armed too: a snapshot's first rows can commit before the batch that
    covers its `STARTED` notice (so before the record shows it under way), and their
    positions, at the snapshot's LSN, are already past the WAL end.
    """
    url = config.sources[0].dsn
    tables = set(config.lake_tables_of(config.sources[0]))
    wal = int(sql(url, "SELECT pg_current_wal_lsn() - '0/0'")[0][0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        record = record_of(config)
        reached = lake_position(config.lake)
        target = lsn_position(wal, record.epoch if record else 0)[:16]
        armed = record is not None and tables <= set(record.armed)
        if record and armed and not record.arming and reached and reached >= target:
            return
        time.sleep(0.2)
    raise AssertionError(f"the lake did not catch up: {record_of(config)}")


def verify_config(config: PipelineConfig) -> None:
    """`tidemark verify` for the config's source: no difference, no broken invariant."""
    report = verify_source(config, config.sources[0], timeout=60)
    assert report.ok, [t for t in report.tables if not t.ok]


def unique_name() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def drop_pipeline_slot(url: str, pipeline: str) -> None:
    """Leave no slot behind on the shared cluster (its walsender may linger a moment)."""
    for _ in range(50):
        try:
            drop_slot(url, replication_name(pipeline, "src"))
            return
        except psycopg2.errors.ObjectInUse:
            time.sleep(0.1)


def assert_versions(model: Versions, lake: str, table: str, lake_table: str) -> None:
    """The lake's versions per key equal the model's, key by key."""
    expected = model.expected(table)
    got = lake_versions(lake, lake_table)
    wrong = {
        k: (expected.get(k), got.get(k))
        for k in set(expected) | set(got)
        if expected.get(k) != got.get(k)
    }
    assert not wrong, list(wrong.items())[:3]
    assert sum(len(v) for v in got.values()) == sum(len(v) for v in expected.values())


Waiter = Callable[[], None]

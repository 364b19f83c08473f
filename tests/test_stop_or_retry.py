"""Permanent errors stop with the fix, transient ones are retried and shown (issue 14, part 4).

`tidemark run` as a user runs it (a child process): a wrong password, a missing table, a
`keys` override naming a column the table lacks, a publication it may not extend, or a
source without the DDL capture each end in one line naming the problem and the fix, exit 2,
within seconds. A database restart while it runs is retried with backoff, and `status` says
so meanwhile; afterwards the lake is exact. `setup` prints before it applies anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import yaml

from tests.fixtures.postgres import PostgresHandle

pytestmark = [pytest.mark.postgres]
ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, dsn: str, tables: list[str], **source: object) -> Path:
    path = tmp_path / "pipeline.yaml"
    document = {
        "pipeline": f"p{abs(hash((str(tmp_path), dsn))) % 10**8}",
        "lake": str(tmp_path / "lake"),
        "sources": [{"name": "shop", "kind": "postgres", "dsn": dsn, "tables": tables, **source}],
        "batching": {"max_events": 1000, "max_latency_ms": 200},
        "debezium": {"heartbeat_ms": 500},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIDEMARK_STATE": str(tmp_path / "state")}
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-2000:])


def _sql(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def test_wrong_password_stops_at_once_with_the_fix(fresh_database, tmp_path):
    dsn = fresh_database()
    _sql(dsn, "CREATE TABLE items (id int PRIMARY KEY)")
    wrong = dsn.replace("tidemark:", "tidemark:not-", 1)
    started = time.monotonic()
    result = _cli(tmp_path, "run", "--config", str(_config(tmp_path, wrong, ["public.items"])))
    _one_line_error(result, "refused the connection", "password")
    assert time.monotonic() - started < 30
    assert "not-" not in result.stderr  # never print a password


def test_setup_prints_then_applies_and_run_checks_it(fresh_database, tmp_path):
    dsn = fresh_database()
    _sql(dsn, "CREATE TABLE items (id int PRIMARY KEY, v text)")
    config = str(_config(tmp_path, dsn, ["public.items"]))
    missing = _cli(tmp_path, "run", "--config", config)
    _one_line_error(missing, "schema changes cannot be captured", "tidemark setup")
    printed = _cli(tmp_path, "setup", "--config", config, "--dry-run")
    assert printed.returncode == 0, printed.stderr
    assert "CREATE EVENT TRIGGER tidemark_ddl_end" in printed.stdout
    assert "publish_via_partition_root = true" in printed.stdout
    _one_line_error(_cli(tmp_path, "run", "--config", config), "tidemark setup")  # nothing applied
    applied = _cli(tmp_path, "setup", "--config", config, "--yes")
    assert applied.returncode == 0, applied.stderr
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT evtname FROM pg_event_trigger ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == [
            "tidemark_ddl_end",
            "tidemark_ddl_start",
            "tidemark_drop",
        ]
        cur.execute("SELECT schema_name, table_name FROM _tidemark.captured")
        assert cur.fetchall() == [("public", "items")]
    conn.close()


def test_a_keys_override_naming_a_missing_column_stops_with_the_columns(fresh_database, tmp_path):
    dsn = fresh_database()
    _sql(dsn, "CREATE TABLE items (id int PRIMARY KEY, sku text)")
    config = _config(
        tmp_path, dsn, ["public.items"], keys={"public.items": ["skuu"]}, ddl_capture=False
    )
    started = time.monotonic()
    result = _cli(tmp_path, "run", "--config", str(config))
    _one_line_error(result, "`skuu`", "public.items", "id, sku")
    assert time.monotonic() - started < 60


def test_a_missing_table_stops(fresh_database, tmp_path):
    dsn = fresh_database()
    config = _config(tmp_path, dsn, ["public.nowhere"], ddl_capture=False)
    _one_line_error(_cli(tmp_path, "run", "--config", str(config)), "public.nowhere")


def test_a_publication_without_the_table_that_cannot_be_extended(fresh_database, tmp_path):
    dsn = fresh_database()
    role = f"cap_{tmp_path.name[-8:].lower()}".replace("-", "_")
    _sql(
        dsn,
        "CREATE TABLE items (id int PRIMARY KEY)",
        "CREATE TABLE other (id int PRIMARY KEY)",
        f"CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw'",
        f"GRANT SELECT ON items, other TO {role}",
        f"GRANT CREATE ON SCHEMA public TO {role}",
    )
    config = _config(tmp_path, dsn, ["public.items"], ddl_capture=False)
    publication = yaml.safe_load(config.read_text())["pipeline"]
    # The publication an owner made, for another table; the capture role owns neither.
    _sql(dsn, f"CREATE PUBLICATION tidemark_{publication}_shop FOR TABLE other")
    user_dsn = dsn.replace(dsn.split("//")[1].split("@")[0], f"{role}:pw")
    config = _config(tmp_path, user_dsn, ["public.items"], ddl_capture=False)
    result = _cli(tmp_path, "run", "--config", str(config))
    _one_line_error(result, "publication", "CREATE PUBLICATION")
    assert ":pw@" not in result.stderr


@pytest.mark.slow  # long; the default run stays under 15 min
@pytest.mark.debezium
def test_a_database_restart_is_retried_and_shown_in_status(
    postgres: PostgresHandle, fresh_database, tmp_path
):
    dsn = fresh_database()
    _sql(
        dsn, "CREATE TABLE items (id int PRIMARY KEY, v text)", "INSERT INTO items VALUES (1, 'a')"
    )
    config = str(_config(tmp_path, dsn, ["public.items"], ddl_capture=False))
    env = {**os.environ, "TIDEMARK_STATE": str(tmp_path / "state")}
    log = open(tmp_path / "run.log", "w")
    run = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "run", "--config", config],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def runner() -> dict | None:
            result = _cli(tmp_path, "status", "--config", config, "--json")
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)["runner"]

        _until(lambda: (runner() or {}).get("state") == "running")
        _until(lambda: _live_rows(tmp_path) == 1)
        postgres.cluster.stop(mode="fast")
        try:
            _until(lambda: (runner() or {}).get("state") == "retrying", timeout=90)
            assert "retries so far" in _cli(tmp_path, "status", "--config", config).stdout
        finally:
            postgres.cluster.start()
        _sql(dsn, "INSERT INTO items VALUES (2, 'after the restart')")
        _until(lambda: _live_rows(tmp_path) == 2, timeout=120)
        _until(lambda: (runner() or {}).get("state") == "running")
        verified = _cli(tmp_path, "verify", "--config", config)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        run.terminate()
        run.wait(60)
        log.close()
    assert run.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]


def _live_rows(tmp_path: Path) -> int:
    from deltalake import DeltaTable

    path = tmp_path / "lake" / "live" / "shop.public.items"
    if not DeltaTable.is_deltatable(str(path)):
        return 0
    return DeltaTable(str(path)).to_pyarrow_dataset().count_rows()


def _until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)

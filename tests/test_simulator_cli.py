"""`tidemark simulate` as a user runs it: bad input, graceful stop, the summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from tests.simulator_support import BALANCE_MISMATCHES, decoded_changes, query, read_ledger
from tidemark.connectors.postgres.cluster import free_port

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 60, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "tidemark", "simulate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _assert_usage_error(result, *, names: str, secret: str | None = None):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and names in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr + result.stdout
    if secret:
        assert secret not in result.stderr + result.stdout


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user = rest.split(":", 1)[0]
    return f"{scheme}://{user}:{password}@{rest.split('@', 1)[1]}"


def test_unreachable_database():
    url = f"postgresql://bob:hunter2secret@127.0.0.1:{free_port()}/shop"
    _assert_usage_error(
        _cli("--db", url, "--max-changes", "1"),
        names="cannot reach PostgreSQL",
        secret="hunter2secret",
    )


def test_wrong_password(postgres):
    url = _with_password(postgres.url, "wrong-pass-xyz")
    _assert_usage_error(
        _cli("--db", url, "--setup"), names="rejected the login", secret="wrong-pass-xyz"
    )


def test_missing_database(postgres):
    _assert_usage_error(
        _cli("--db", postgres.url_for("no_such_db_here")),
        names="does not exist",
        secret=postgres.cluster.password,
    )


def test_unknown_profile(postgres):
    result = _cli("--db", postgres.url, "--profile", "casino")
    _assert_usage_error(result, names="unknown profile `casino`")
    assert "customers, bank, retail" in result.stderr


@pytest.mark.parametrize(
    "url, names",
    [
        ("not-a-url", "unsupported database URL scheme"),
        ("mysql://u:topsecretpw@h:3306/db", "unsupported database URL scheme `mysql`"),
        ("postgresql://u:topsecretpw@h:notaport/db", "bad database URL"),
        ("postgresql://u:topsecretpw@h:5432/", "names no database"),
    ],
)
def test_bad_url(url, names):
    _assert_usage_error(_cli("--db", url), names=names, secret="topsecretpw")


def test_sqlserver_without_driver_says_what_to_install():
    pytest.importorskip("sqlglot")  # always present in dev; pyodbc is not
    try:
        import pyodbc  # noqa: F401

        pytest.skip("pyodbc is installed here; this checks the message when it is missing")
    except ImportError:
        pass
    result = _cli("--db", "mssql://sa:Str0ngSecret@127.0.0.1:1433/shop")
    _assert_usage_error(result, names="pyodbc", secret="Str0ngSecret")
    assert "pip install tidemark[sqlserver]" in result.stderr and "ODBC" in result.stderr


def test_schema_missing_without_setup(fresh_database):
    result = _cli("--db", fresh_database(), "--profile", "bank", "--max-changes", "5")
    _assert_usage_error(result, names="does not exist")
    assert "--setup" in result.stderr


def test_done_criterion_bank_10000_changes_4_workers(fresh_database, tmp_path):
    url = fresh_database()
    with decoded_changes(url) as committed:
        result = _cli(
            "--db",
            url,
            "--profile",
            "bank",
            "--setup",
            "--max-changes",
            "10000",
            "--workers",
            "4",
            timeout=180,
        )
    assert result.returncode == 0, result.stderr
    assert "10,000 committed row changes" in result.stdout
    assert len(committed) == 10000
    assert query(url, BALANCE_MISMATCHES) == [(0,)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_in_flight_transactions_and_prints_summary(sig, fresh_database, tmp_path):
    url = fresh_database()
    ledger = tmp_path / "ledger.jsonl"
    assert _cli("--db", url, "--profile", "bank", "--setup", "--max-changes", "0").returncode == 0
    with decoded_changes(url) as committed:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidemark",
                "simulate",
                "--db",
                url,
                "--profile",
                "bank",
                "--workers",
                "3",
                "--ledger",
                str(ledger),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while (
            not ledger.exists() or ledger.stat().st_size < 5_000
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.startswith("stopped: ")
    lines = read_ledger(ledger)
    total = int(out.split(" ", 2)[1].replace(",", ""))
    assert total == len(lines) == len(committed) > 0  # whole transactions only
    assert {"accounts", "transactions"} <= {line.split()[0] for line in out.splitlines()[2:]}
    assert query(url, BALANCE_MISMATCHES) == [(0,)]


def test_quiet_when_not_a_terminal(fresh_database):
    result = _cli("--db", fresh_database(), "--setup", "--max-changes", "50")
    assert result.returncode == 0
    assert result.stderr == ""  # no progress line without a terminal
    assert result.stdout.splitlines()[0].startswith("50 committed row changes")


def test_user_without_rights(postgres, fresh_database):
    url, role = fresh_database(), f"reader_{uuid.uuid4().hex[:8]}"
    assert _cli("--db", url, "--setup", "--max-changes", "0").returncode == 0
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw-123'")
    conn.close()
    reader = _with_password(
        url.replace(url.split("://")[1].split(":")[0], role, 1), "reader-pw-123"
    )
    _assert_usage_error(
        _cli("--db", reader, "--setup"),
        names="cannot create the `customers`",
        secret="reader-pw-123",
    )
    _assert_usage_error(_cli("--db", reader), names="cannot read table `public.customers`")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    conn.close()
    result = _cli("--db", reader, "--max-changes", "10")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the database refused a simulated statement" in result.stderr
    assert "permission denied" in result.stderr

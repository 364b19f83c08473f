"""Exit codes are exact (issue 13, item 7): 0 the command did its work, 1 a check found
something (`verify` a difference, `db status` / `connectors status` something not running),
2 it could not (usage, environment, interrupt, or a bug with its traceback).

The commands that read Delta (`verify`, `status`, `query`, and `serve`, stopped by a signal
once its page answered) run as real processes against a real Postgres and a lake, run after
run: a plain script that reads a Delta table aborted at interpreter exit now and then
("terminate called without an active exception", exit 134; delta-rs #2184) after doing its
work. A few runs each here; 50 in a row under `-m slow`, against a lake written by
`tidemark run`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import click
import psycopg2
import pytest
import yaml

from tests.pipeline.handmade_lake import build, story
from tests.pipeline.test_verify import _source
from tidemark import cli

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def _database(postgres) -> str:
    name = f"x_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(postgres.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return postgres.url_for(name)


def _config(path: Path, url: str, lake: Path, tables: list[str], name: str = "t") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": name,
                "lake": str(lake),
                "sources": [{"name": "shop", "kind": "postgres", "dsn": url, "tables": tables}],
            }
        )
    )
    return path


def _tidemark(*args: str, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=ROOT,
        env={**os.environ, "TIDEMARK_STATE": str(state)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _reading(config: Path, table: str) -> dict[str, tuple[list[str], str]]:
    """Each command that reads Delta, with what its output must show."""
    return {
        "verify": (["verify", "--config", str(config), "--timeout", "5"], "verify: OK"),
        "status": (["status", "--config", str(config), "--json"], f'"table": "{table}"'),
        "query": (
            [
                "query",
                "--config",
                str(config),
                "--format",
                "csv",
                "SELECT count(*) AS n FROM live." + table.rsplit(".", 1)[-1],
            ],
            "n\n",
        ),
    }


def _run_in_a_row(command: list[str], expect: str, state: Path, times: int) -> None:
    codes = []
    for _ in range(times):
        done = _tidemark(*command, state=state)
        codes.append(done.returncode)
        assert done.returncode == 0, (codes, done.stderr[-2000:])
        assert expect in done.stdout + done.stderr, done.stdout[-2000:]
    assert codes == [0] * times


@pytest.fixture
def handmade(postgres, tmp_path: Path) -> tuple[Path, Path, str]:
    """A source table and a lake that matches it (written by deltalake directly)."""
    url = _database(postgres)
    _source(url, story())
    build(tmp_path / "lake", "shop.public.customers", story())
    config = _config(tmp_path / "p.yaml", url, tmp_path / "lake", ["public.customers"])
    return config, tmp_path / "state", url


@pytest.mark.parametrize("name", ["verify", "status", "query"])
def test_reading_commands_exit_0_run_after_run(handmade, name: str) -> None:
    config, state, _ = handmade
    command, expect = _reading(config, "shop.public.customers")[name]
    _run_in_a_row(command, expect, state, times=3)


def _serve_until_it_answers(config: Path, state: Path, stop: signal.Signals) -> int:
    """Start `tidemark serve`, wait for its status API, stop it with `stop`; its exit code."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "TIDEMARK_STATE": str(state)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1][-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve never answered"
                time.sleep(0.3)
        process.send_signal(stop)
        return process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stopped_by_a_signal_exits_0(handmade, stop) -> None:
    """uvicorn raises the signal again after its graceful stop (exit 143 on SIGTERM)."""
    config, state, _ = handmade
    assert _serve_until_it_answers(config, state, stop) == 0


def test_verify_exits_1_on_a_difference_and_2_when_the_source_is_gone(handmade) -> None:
    config, state, url = handmade
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE public.customers SET name = 'changed behind the lake' WHERE id = 1")
    found = _tidemark("verify", "--config", str(config), "--timeout", "5", state=state)
    assert found.returncode == 1, found.stderr
    assert "DIFFERENCES FOUND" in found.stderr and "1 differing" in found.stdout
    broken = config.read_text().replace(url.rsplit("/", 1)[0], "postgresql://x:y@127.0.0.1:1")
    config.write_text(broken)
    gone = _tidemark("verify", "--config", str(config), "--timeout", "5", state=state)
    assert gone.returncode == 2, gone.stderr
    assert gone.stderr.startswith("error: ") and "Traceback" not in gone.stderr


# -- every command's error paths, in process (the same `run_cli` the entry point calls) -----
@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["run"],
        ["run", "--config", "{missing}"],
        ["run", "--config", "{bad}"],
        ["up", "--profile", "nope"],
        ["tail", "--config", "{missing}"],
        ["simulate", "--db", "postgresql://u:p@127.0.0.1:1/x", "--max-changes", "1"],
        ["db", "url"],
        ["verify", "--config", "{missing}"],
        ["verify"],
        ["status", "--config", "{bad}"],
        ["query", "--lake", "{empty}", "SELECT 1"],
        ["query", "--lake", "{lake}", "SELECT * FROM live.nope"],
        ["worker", "--config", "{missing}"],
        ["connectors", "render", "--config", "{bad}"],
        ["resync", "--config", "{missing}"],
        ["resync", "--config", "{bad}"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_usage_and_environment_errors_exit_2(argv, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TIDEMARK_STATE", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    build(tmp_path / "lake", "shop.public.customers", story())
    (tmp_path / "bad.yaml").write_text("pipeline: x\nlake: ./l\nsources: nope\n")
    (tmp_path / "empty").mkdir()
    paths = {
        "missing": tmp_path / "none.yaml",
        "bad": tmp_path / "bad.yaml",
        "empty": tmp_path / "empty",
        "lake": tmp_path / "lake",
    }
    code = cli.run_cli([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip(), "an error says what went wrong"


def test_db_status_of_a_cluster_that_is_not_there_exits_1(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TIDEMARK_STATE", str(tmp_path / "state"))
    assert cli.run_cli(["db", "status"]) == 1
    assert "not initialized" in capsys.readouterr().out


@click.command()
@click.argument("what")
def _misbehaving(what: str) -> None:
    """A command that fails in the ways a library or a bug can."""
    if what == "bug":
        raise RuntimeError("a bug")
    if what == "interrupt":
        raise KeyboardInterrupt
    if what == "library-exit":
        raise SystemExit(1)  # e.g. click on a closed pipe, or Faust: not a finding
    if what == "library-ok":
        raise SystemExit(0)
    if what == "found":
        raise click.exceptions.Exit(1)


@pytest.mark.parametrize(
    ("what", "code"),
    [("bug", 2), ("interrupt", 2), ("library-exit", 2), ("library-ok", 0), ("found", 1)],
)
def test_unexpected_failures_never_exit_1(what, code, monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli.COMMANDS, "misbehave", f"{__name__}:_misbehaving")
    assert cli.run_cli(["misbehave", what]) == code
    err = capsys.readouterr().err
    if what == "bug":
        assert "Traceback" in err and "RuntimeError: a bug" in err and "a bug;" in err


def test_the_exit_path_flushes_everything_and_keeps_the_code(tmp_path) -> None:
    script = (
        "import sys; from tidemark.cli import exit_now; "
        "sys.stdout.write('x' * 200000); sys.stderr.write('done'); exit_now(1)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == "x" * 200000 and done.stderr == "done"


# -- the long form: a lake written by `tidemark run`, 50 runs of each reading command --------
@pytest.fixture(scope="module")
def pipeline_lake(postgres, tmp_path_factory) -> tuple[Path, Path]:
    """A 20,000-row table with updates and deletes, captured by `tidemark run` (stopped)."""
    root = tmp_path_factory.mktemp("exitcodes")
    url = _database(postgres)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE public.items (id int PRIMARY KEY, qty int, note text,"
            " at timestamptz, amount numeric(10,2))"
        )
        cur.execute(
            "INSERT INTO public.items SELECT g, g % 7, 'n' || g, now(), g / 3.0"
            " FROM generate_series(1, 20000) g"
        )
    config = _config(root / "p.yaml", url, root / "lake", ["public.items"], name="exits")
    state = root / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "tidemark", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "TIDEMARK_STATE": str(state)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        changed = False
        while time.monotonic() < deadline:
            if (
                _tidemark(
                    "verify", "--config", str(config), "--timeout", "2", state=state
                ).returncode
                == 0
            ):
                if changed:
                    break
                with psycopg2.connect(url) as conn, conn.cursor() as cur:
                    cur.execute("UPDATE public.items SET qty = qty + 1 WHERE id % 100 = 0")
                    cur.execute("DELETE FROM public.items WHERE id % 250 = 0")
                changed = True
            time.sleep(1)
        else:
            raise AssertionError("the pipeline never caught up")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    return config, state


@pytest.mark.slow
@pytest.mark.debezium
@pytest.mark.parametrize("name", ["verify", "status", "query"])
def test_reading_commands_exit_0_fifty_times_in_a_row(pipeline_lake, name: str) -> None:
    config, state = pipeline_lake
    command, expect = _reading(config, "shop.public.items")[name]
    _run_in_a_row(command, expect, state, times=50)


@pytest.mark.slow
@pytest.mark.debezium
def test_serve_exits_0_fifty_times_in_a_row(pipeline_lake) -> None:
    config, state = pipeline_lake
    codes = [_serve_until_it_answers(config, state, signal.SIGTERM) for _ in range(50)]
    assert codes == [0] * 50

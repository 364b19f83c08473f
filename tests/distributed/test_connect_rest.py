"""`tidemark connectors ...` against a real Kafka Connect worker with Debezium and a real
Postgres: registration (idempotent), status and offsets, delete, the secrets file, and the
errors a user meets, each reported as permanent with its fix (never "retry later")."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from tests.distributed.support import wait_for
from tests.fixtures.connect import ConnectHandle
from tidemark.connectors.kafka_connect import (
    ConnectRejected,
    KafkaConnect,
    connect_slot,
    register,
    render_connectors,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.connect]
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _pipeline(tmp: Path, dsn: str, *, source: str, bootstrap: str, name: str = "") -> Path:
    user, rest = dsn.removeprefix("postgresql://").split(":", 1)
    password, host = rest.split("@", 1)
    config = tmp / f"pipeline{name}.yaml"
    config.write_text(
        f"pipeline: p{uuid.uuid4().hex[:6]}\nlake: {tmp / 'lake'}\nsources:\n"
        f"  - name: {source}\n    kind: postgres\n"
        f"    dsn: postgresql://{user}:${{SRC_PW}}@{host}\n    tables: [public.items]\n"
        f"kafka:\n  bootstrap: {bootstrap}\n"
    )
    os.environ.setdefault("SRC_PW", password)
    return config


def _drop_slot(dsn: str, slot: str) -> None:
    def gone() -> bool:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if row is None:
                return True
            if not row[0]:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            return False

    wait_for(gone, timeout=60, what=f"slot {slot} released")


@pytest.fixture
def source_db(fresh_database: Callable[[], str]) -> str:
    dsn = fresh_database()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
    return dsn


@pytest.mark.slow  # long; the default run stays under 15 min (Connect is driven by the e2e tests)
def test_secrets_register_status_offsets_delete(
    tmp_path: Path, source_db: str, connect_worker: ConnectHandle, kafka: object
) -> None:
    source = f"r{uuid.uuid4().hex[:6]}"
    config = _pipeline(tmp_path, source_db, source=source, bootstrap=kafka.bootstrap)  # type: ignore[attr-defined]
    env = {"SRC_PW": source_db.split(":")[2].split("@")[0]}
    secrets = tmp_path / "secrets" / "tidemark.properties"
    wrote = _cli("connectors", "secrets", "--config", str(config), "--out", str(secrets), env=env)
    assert wrote.returncode == 0, wrote.stderr
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert env["SRC_PW"] not in wrote.stdout + wrote.stderr
    url = ["--connect-url", connect_worker.url]
    args = ["--config", str(config), *url, "--secrets-file", str(secrets)]
    first = _cli("connectors", "register", *args, env=env)
    again = _cli("connectors", "register", *args, env=env)
    pipeline = config.read_text().split()[1]
    assert first.stdout.strip() == f"{pipeline}-{source}: created", first.stderr
    assert again.stdout.strip() == f"{pipeline}-{source}: updated", again.stderr

    def running() -> subprocess.CompletedProcess[str] | None:
        result = _cli("connectors", "status", "--config", str(config), *url, env=env)
        return result if result.returncode == 0 else None

    ok = wait_for(running, timeout=120, what="the connector and its task running")
    assert f"{pipeline}-{source}: RUNNING" in ok.stdout and "task 0 RUNNING" in ok.stdout
    assert "password" not in ok.stdout.lower() or env["SRC_PW"] not in ok.stdout
    offsets = wait_for(
        lambda: (
            "lsn="
            in (r := _cli("connectors", "status", "--config", str(config), *url, env=env)).stdout
            and r
        ),
        timeout=120,
        what="committed source offsets",
    )
    assert "offsets:" in offsets.stdout
    gone = _cli("connectors", "delete", "--config", str(config), *url, env=env)
    assert gone.stdout.strip() == f"{pipeline}-{source}: deleted"
    missing = wait_for(  # Connect removes it once it has read its config topic back
        lambda: (
            "not registered"
            in (r := _cli("connectors", "status", "--config", str(config), *url, env=env)).stdout
            and r
        ),
        timeout=60,
        what="the connector gone",
    )
    assert missing.returncode == 1
    _drop_slot(source_db, connect_slot(pipeline, source))


def test_a_missing_secrets_file_is_permanent_and_says_how_to_write_it(
    tmp_path: Path, source_db: str, connect_worker: ConnectHandle, kafka: object
) -> None:
    config = _pipeline(
        tmp_path, source_db, source=f"m{uuid.uuid4().hex[:6]}", bootstrap=kafka.bootstrap
    )  # type: ignore[attr-defined]
    result = _cli(
        "connectors",
        "register",
        "--config",
        str(config),
        "--connect-url",
        connect_worker.url,
        "--secrets-file",
        str(tmp_path / "nowhere.properties"),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "nowhere.properties" in result.stderr and "tidemark connectors secrets" in result.stderr
    assert "retry" not in result.stderr.lower()


def test_an_unset_env_password_is_refused_naming_the_variable(
    tmp_path: Path, source_db: str, connect_worker: ConnectHandle, kafka: object
) -> None:
    """`--secrets env` with the variable unset in Connect's environment: Connect leaves
    `${env:...}` unresolved, Postgres refuses the login, and the error says which variable."""
    config = _pipeline(
        tmp_path, source_db, source=f"e{uuid.uuid4().hex[:6]}", bootstrap=kafka.bootstrap
    )  # type: ignore[attr-defined]
    result = _cli(
        "connectors",
        "register",
        "--config",
        str(config),
        "--connect-url",
        connect_worker.url,
        "--secrets",
        "env",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TIDEMARK_<SOURCE>_PASSWORD" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_property_and_a_taken_topic_prefix_are_refused(
    tmp_path: Path, source_db: str, connect_worker: ConnectHandle, kafka: object
) -> None:
    from tidemark.config import load_config
    from tidemark.stack.cluster import write_secrets

    source = f"t{uuid.uuid4().hex[:6]}"
    first = load_config(
        _pipeline(tmp_path, source_db, source=source, bootstrap=kafka.bootstrap, name="a")
    )  # type: ignore[attr-defined]
    second = load_config(
        _pipeline(tmp_path, source_db, source=source, bootstrap=kafka.bootstrap, name="b")
    )  # type: ignore[attr-defined]
    write_secrets(connect_worker.secrets_file, first)
    client = KafkaConnect(connect_worker.url)

    def configs(cfg):
        return render_connectors(
            cfg.sources,
            pipeline=cfg.pipeline,
            bootstrap="x",
            secrets_file=str(connect_worker.secrets_file),
        )

    bad = {k: {**v, "snapshot.mode": "sometimes"} for k, v in configs(first).items()}
    with pytest.raises(ConnectRejected, match=r"snapshot\.mode") as error:
        register(client, bad)
    assert "snapshot.mode" in (error.value.hint or "")
    register(client, configs(first))
    try:
        with pytest.raises(ConnectRejected, match=f"already writes the topics `{source}") as taken:
            register(client, configs(second))
        assert "rename this pipeline's source" in (taken.value.hint or "")
        assert client.status(f"{second.pipeline}-{source}") is None
    finally:
        client.delete(f"{first.pipeline}-{source}")
        _drop_slot(source_db, connect_slot(first.pipeline, source))

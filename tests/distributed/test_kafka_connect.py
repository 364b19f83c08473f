"""Connector configs rendered for Kafka Connect; the REST client's handling of answers a real
Connect cannot be made to give on demand (409, FAILED tasks: a stand-in serves them, with
recorded bodies). Everything else runs against a real Connect in `test_connect_rest.py`."""

from dataclasses import dataclass

import pytest

from tests.distributed.fake_connect import RECORDED, FakeConnect
from tidemark.connectors.errors import SourceUnavailable
from tidemark.connectors.kafka_connect import (
    ConnectBusy,
    ConnectorStatus,
    KafkaConnect,
    classify,
    connector_name,
    password_env_var,
    render_connectors,
    secrets_properties,
)
from tidemark.connectors.postgres.cluster import free_port


@dataclass(frozen=True)
class Source:
    name: str
    kind: str
    dsn: str
    tables: tuple[str, ...]


SHOP = Source(
    "shop",
    "postgres",
    "postgresql://shop_user:s3cr%40t-pw@postgres:5432/shop",
    ("public.customers", "public.orders"),
)
ERP = Source("erp", "sqlserver", "mssql://sa:Erp-Pa55word!@sqlserver:1433/erp", ("dbo.items",))


def test_render_uses_config_provider_references_never_the_password():
    configs = render_connectors([SHOP, ERP], pipeline="demo", bootstrap="kafka:9092")
    assert set(configs) == {"demo-shop", "demo-erp"}
    shop, erp = configs["demo-shop"], configs["demo-erp"]
    assert shop["database.password"] == "${file:/secrets/tidemark.properties:shop.password}"
    assert erp["database.password"] == "${file:/secrets/tidemark.properties:erp.password}"
    for cfg in configs.values():
        text = repr(cfg)
        assert "s3cr@t-pw" not in text and "s3cr%40t-pw" not in text
        assert "Erp-Pa55word!" not in text


def test_render_env_provider():
    configs = render_connectors([SHOP], pipeline="demo", bootstrap="k:9092", secrets="env")
    assert configs["demo-shop"]["database.password"] == "${env:TIDEMARK_SHOP_PASSWORD}"
    assert password_env_var("my-src") == "TIDEMARK_MY_SRC_PASSWORD"


def test_render_keeps_engine_settings_and_drops_engine_only_keys():
    shop = render_connectors([SHOP], pipeline="demo", bootstrap="k:9092")["demo-shop"]
    assert shop["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert shop["topic.prefix"] == "shop"  # topics are <source>.<schema>.<table>
    assert shop["table.include.list"] == r"^(?-i)public\.customers$,^(?-i)public\.orders$"
    assert shop["decimal.handling.mode"] == "string"  # numeric NaN told apart from NULL
    assert shop["converters"] == "tidemark_arrays"  # the jar sits beside the connector
    assert shop["slot.name"] == "tidemark_demo_shop_connect"
    assert shop["provide.transaction.metadata"] == "true"
    assert shop["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert shop["value.converter.schemas.enable"] == "true"
    assert shop["value.converter.replace.null.with.default"] == "false"
    assert not any(k.startswith("offset.") for k in shop)
    assert "name" not in shop  # the name is the REST path, not part of the body
    erp = render_connectors([ERP], pipeline="demo", bootstrap="kafka:9092")["demo-erp"]
    assert erp["connector.class"] == "io.debezium.connector.sqlserver.SqlServerConnector"
    assert erp["schema.history.internal.kafka.bootstrap.servers"] == "kafka:9092"
    assert not any(k.startswith("schema.history.internal.file") for k in erp)
    assert erp.get("schema.history.internal") is None


def test_render_is_deterministic():
    a = render_connectors([SHOP, ERP], pipeline="demo", bootstrap="kafka:9092")
    b = render_connectors([SHOP, ERP], pipeline="demo", bootstrap="kafka:9092")
    assert a == b and list(a["demo-shop"]) == sorted(a["demo-shop"])


def test_secrets_properties_file():
    text = secrets_properties([SHOP, ERP])
    assert text == "shop.password=s3cr@t-pw\nerp.password=Erp-Pa55word!\n"


def test_recorded_status_bodies():
    failed = ConnectorStatus.from_json(RECORDED["status_failed_task"])
    assert failed.state == "RUNNING" and not failed.healthy
    assert [t.state for t in failed.tasks] == ["RUNNING", "FAILED"]
    assert failed.last_error == "org.apache.kafka.common.errors.RecordTooLargeException"
    down = ConnectorStatus.from_json(RECORDED["status_connector_failed"])
    assert down.state == "FAILED" and down.tasks == ()
    assert down.last_error.startswith(
        "org.apache.kafka.connect.errors.ConnectException: Unable to obtain valid replication slot"
    )
    unassigned = ConnectorStatus.from_json(RECORDED["status_unassigned"])
    assert not unassigned.healthy and unassigned.last_error is None


def test_rebalance_409_is_retried_then_reported_as_transient():
    with FakeConnect() as connect:
        client = KafkaConnect(connect.url, retries=3)
        connect.state.busy = 2
        assert client.put_config("demo-shop", {"connector.class": "x"}) is True
        connect.state.busy = 5
        with pytest.raises(ConnectBusy, match="409"):
            client.put_config("demo-shop", {"connector.class": "x"})


def test_unreachable_connect_is_a_clear_transient_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceUnavailable, match="cannot reach Kafka Connect"):
        KafkaConnect(url, timeout=2).list()


def test_connector_name():
    assert connector_name("demo", "shop") == "demo-shop"


def _cli(*args, env=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cli_status_exits_1_for_a_failed_task_or_no_task(tmp_path):
    """States a real Connect cannot be put into on demand (the stand-in serves them): a
    FAILED task with its trace, and RUNNING with no task."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "pipeline: demo\nsources:\n  - name: shop\n    kind: postgres\n"
        "    dsn: postgresql://u:${SHOP_PW}@db:5432/shop\n    tables: [public.customers]\n"
        "kafka:\n  bootstrap: kafka:9092\n"
    )
    env = {"SHOP_PW": "Very-Secret-1"}
    with FakeConnect() as connect:
        url = ["--connect-url", connect.url]
        first = _cli("connectors", "register", "--config", str(config), *url, env=env)
        assert first.stdout.strip() == "demo-shop: created", first.stderr
        connect.state.task_state["demo-shop"] = (
            "FAILED",
            "java.lang.IllegalStateException: slot in use\n\tat x",
        )
        bad = _cli("connectors", "status", "--config", str(config), *url, env=env)
        assert bad.returncode == 1
        assert "task 0 FAILED" in bad.stdout
        assert "last error: java.lang.IllegalStateException: slot in use" in bad.stdout
        connect.state.recorded_status["demo-shop"] = {
            "connector": {"state": "RUNNING", "worker_id": "c:8083"},
            "tasks": [],
        }
        idle = _cli("connectors", "status", "--config", str(config), *url, env=env)
        assert idle.returncode == 1, idle.stdout
        assert "demo-shop: RUNNING on c:8083 (no tasks)" in idle.stdout
        assert "no task runs" in idle.stdout
    down = _cli(
        "connectors",
        "status",
        "--config",
        str(config),
        "--connect-url",
        f"http://127.0.0.1:{free_port()}",
        env=env,
    )
    assert down.returncode == 2 and "cannot reach Kafka Connect" in down.stderr


def test_connect_errors_are_classified_with_their_fix():
    """Kafka Connect's own messages (taken from a real Connect 4.3 worker): a missing
    secrets file comes as a 500 but is permanent; a refused password names the variable."""
    permanent, hint = classify(500, "Could not read properties from file /secrets/x.properties")
    assert permanent and "`/secrets/x.properties`" in hint and "connectors secrets" in hint
    permanent, hint = classify(
        400,
        "Connector configuration is invalid and contains the following 1 error(s):\n"
        "Error while validating connector config: FATAL: password authentication failed for "
        'user "tidemark"\nYou can also find the above list of errors at the endpoint',
    )
    assert permanent and "`tidemark`" in hint and "TIDEMARK_<SOURCE>_PASSWORD" in hint
    permanent, hint = classify(
        400,
        "Connector configuration is invalid and contains the following 1 error(s):\n"
        "The 'snapshot.mode' value is invalid: Value must be one of always, initial",
    )
    assert permanent and "`snapshot.mode`" in hint
    assert classify(409, "Cannot complete request momentarily") == (False, None)
    assert classify(503, "upstream down") == (False, None)
    assert classify(400, "contains no connector type") == (True, None)

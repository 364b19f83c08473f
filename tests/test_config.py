"""Pipeline configuration: the minimal file works; every error names key, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.config import load_config, parse_config
from tidemark.errors import ConfigError
from tidemark.kernel.columns import Layer

EXAMPLE = Path(__file__).parent.parent / "config" / "pipeline.yaml"
DSN = "postgresql://app:s3cret@127.0.0.1:5432/shop"


def minimal(**overrides):
    doc = {
        "pipeline": "demo",
        "lake": "./lake",
        "sources": [
            {
                "name": "shop",
                "kind": "postgres",
                "dsn": "${SHOP_DSN}",
                "tables": ["public.customers", "public.addresses"],
            }
        ],
    }
    doc.update(overrides)
    return doc


def test_example_file_loads_with_defaults():
    config = load_config(EXAMPLE, env={"SHOP_DSN": DSN})
    assert config.pipeline == "demo"
    assert config.sources[0].dsn == DSN
    assert config.batching.max_events == 50_000
    assert config.debezium.jvm_heap == "256m"
    assert config.kafka is None
    assert config.layers_for("shop.public.customers") == frozenset(Layer)
    assert config.write_mode_for("shop.public.customers") == "copy_on_write"
    assert config.lake_tables_of(config.sources[0]) == [
        "shop.public.customers",
        "shop.public.addresses",
    ]


def test_config_is_frozen():
    config = parse_config(minimal(), env={"SHOP_DSN": DSN})
    with pytest.raises(Exception, match="frozen"):
        config.pipeline = "other"  # type: ignore[misc]


def test_missing_env_var_names_key_and_variable():
    with pytest.raises(ConfigError, match=r"sources\[0\]\.dsn: environment variable `SHOP_DSN`"):
        parse_config(minimal(), env={})


def test_env_default_is_used():
    doc = minimal()
    doc["sources"][0]["dsn"] = "${NOPE:-" + DSN + "}"
    assert parse_config(doc, env={}).sources[0].dsn == DSN


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (
            lambda d: d["sources"][0].update(tables=["public.ok", "customers"]),
            r"sources\[0\]\.tables: .*`customers` must be schema\.table",
        ),
        (lambda d: d["sources"][0].update(kind="oracle"), r"sources\[0\]\.kind: .*got `oracle`"),
        (
            lambda d: d["sources"][0].update(dsn="mysql://a:b@h/db"),
            r"sources\[0\]: dsn scheme `mysql` does not fit kind `postgres`",
        ),
        (lambda d: d.update(batching={"max_events": 0}), r"batching\.max_events: .*got `0`"),
        (lambda d: d.update(batching={"max_evnts": 5}), r"batching\.max_evnts: is not a known key"),
        (lambda d: d.pop("sources"), r"sources: is required"),
        (lambda d: d.update(layers={"shop.public.nope": ["live"]}), r"layers names unknown"),
        (lambda d: d.update(layers={"*": ["silver"]}), r"layers\.\*\[0\]: .*got `silver`"),
        (lambda d: d.update(write_mode={"shop.public.nope": "merge_on_read"}), r"write_mode names"),
        (
            lambda d: d.update(write_mode={"*": "mor"}),
            r"write_mode\.\*: .*'copy_on_write' or 'merge_on_read'.*got `mor`",
        ),
        (lambda d: d.update(debezium={"jvm_heap": "lots"}), r"debezium\.jvm_heap: .*got `lots`"),
    ],
)
def test_errors_name_the_key_path(mutate, pattern):
    doc = minimal()
    mutate(doc)
    with pytest.raises(ConfigError, match=pattern):
        parse_config(doc, env={"SHOP_DSN": DSN})


def test_password_never_in_error():
    doc = minimal()
    doc["sources"][0]["kind"] = "sqlserver"
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={"SHOP_DSN": DSN})
    assert "s3cret" not in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


def test_a_worker_loads_a_config_whose_source_dsn_is_not_in_its_environment(tmp_path):
    """Workers never connect to a source: an unset variable in a dsn is not an error for
    them (it still is for everything that connects), and SQL Server topics, which name the
    database, say what is missing."""
    from tidemark.commands.worker import worker_settings
    from tidemark.config import ConfigError, load_config
    from tidemark.stream_processors.distributed.errors import WorkerConfigError

    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "pipeline: p\nsources:\n"
        "  - {name: shop, kind: postgres, dsn: '${NOT_SET_SHOP_DSN}', tables: [public.a]}\n"
        "  - {name: erp, kind: sqlserver, dsn: 'mssql://sa:${NOT_SET_PW}@h:1433/erpdb',"
        " tables: [dbo.b]}\n"
        "kafka: {bootstrap: 'k:9092'}\n"
    )
    with pytest.raises(ConfigError, match="NOT_SET_SHOP_DSN"):
        load_config(path)
    cfg = load_config(path, need_dsn=False)
    settings = worker_settings(cfg, web_port=None, session_timeout_s=6, threads=1, stats_path=None)
    assert [t.topic for t in settings.topics] == ["shop.public.a", "erp.erpdb.dbo.b"]
    path.write_text(
        path.read_text().replace("mssql://sa:${NOT_SET_PW}@h:1433/erpdb", "${NOT_SET_ERP_DSN}")
    )
    with pytest.raises(WorkerConfigError, match="SQL Server database"):
        worker_settings(
            load_config(path, need_dsn=False),
            web_port=None,
            session_timeout_s=6,
            threads=1,
            stats_path=None,
        )


def test_write_mode_per_table_or_star():
    doc = minimal()
    doc["write_mode"] = {"*": "merge_on_read", "shop.public.addresses": "copy_on_write"}
    config = parse_config(doc, env={"SHOP_DSN": DSN})
    assert config.write_mode_for("shop.public.customers") == "merge_on_read"
    assert config.write_mode_for("shop.public.addresses") == "copy_on_write"

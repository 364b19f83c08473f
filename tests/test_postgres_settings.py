"""The connector-level Debezium properties (shared with Kafka Connect rendering)."""

from __future__ import annotations

import pytest

from tidemark.connectors.errors import SourceConfigError
from tidemark.connectors.postgres.settings import connector_settings, replication_name


def test_settings_name_slot_publication_and_exact_tables():
    settings = connector_settings(
        name="shop",
        dsn="postgresql://u:p%40ss@db.example:6543/sales",
        tables=["public.customers", "public.order_lines"],
        slot="s1",
        publication="p1",
        heartbeat_ms=5000,
        signal_table="public.sig",
    )
    assert settings["topic.prefix"] == "shop"
    assert (settings["database.hostname"], settings["database.port"]) == ("db.example", "6543")
    assert (settings["database.user"], settings["database.password"]) == ("u", "p@ss")
    assert settings["database.dbname"] == "sales"
    assert settings["plugin.name"] == "pgoutput"
    assert (settings["slot.name"], settings["publication.name"]) == ("s1", "p1")
    assert settings["table.include.list"] == (
        r"^(?-i)public\.customers$,^(?-i)public\.order_lines$,^(?-i)public\.sig$"
    )
    assert settings["provide.transaction.metadata"] == "true"
    assert settings["heartbeat.interval.ms"] == "5000"
    assert "pg_logical_emit_message" in settings["heartbeat.action.query"]
    assert settings["signal.data.collection"] == "public.sig"
    assert settings["decimal.handling.mode"] == "string"  # NaN told apart from NULL
    # engine-only keys stay out: Kafka Connect renders from this same function
    assert not [
        k
        for k in settings
        if k.startswith(("offset.", "converter.", "key.converter", "value.converter"))
    ]


def test_settings_refuse_a_dsn_without_database():
    with pytest.raises(SourceConfigError, match="names no database") as err:
        connector_settings(
            name="s",
            dsn="postgresql://u:secret@h:5432",
            tables=["public.t"],
            slot="s",
            publication="p",
        )
    assert "secret" not in str(err.value)


def test_replication_names_are_valid_slot_names():
    assert replication_name("Demo-Pipe", "shop") == "tidemark_demo_pipe_shop"
    assert len(replication_name("p" * 80, "s")) == 63

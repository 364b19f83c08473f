"""Gold model files: what their SQL allows (inputs, incremental shape), lineage, load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.sinks.gold.lineage import model_lineage, render_tree
from tidemark.sinks.gold.model import Input, ModelError, load_models, parse_model
from tidemark.up import templates_of


@pytest.mark.parametrize(
    ("sql", "keys", "why"),
    [
        ("SELECT store_id, count(*) AS n FROM live.sales GROUP BY store_id", ("store_id",), None),
        (
            "SELECT store_id, CAST(sold_at AS DATE) AS day, sum(total) t FROM live.s GROUP BY 1, 2",
            ("store_id", "day"),
            None,
        ),
        (
            "SELECT id, CAST(_tm_valid_from AS DATE) AS d, count(*) n FROM forensic.a GROUP BY ALL",
            ("id", "d"),
            None,
        ),
        ("SELECT * FROM live.sales", None, "no GROUP BY"),
        ("SELECT s.id, count(*) FROM live.s JOIN live.t ON true GROUP BY 1", None, "reads 2 views"),
        (
            "SELECT store_id, count(*) FROM live.sales WHERE sold_at > now() GROUP BY 1",
            None,
            "clock",
        ),
        ("SELECT _tm_batch, count(*) FROM live.sales GROUP BY 1", None, "_tm_batch"),
        ("SELECT count(*) FROM live.sales GROUP BY store_id", None, "not an output column"),
        ("SELECT id, count(*) FROM changelog.sales GROUP BY id", None, "reads changelog"),
    ],
)
def test_incremental_only_where_the_sql_allows(sql: str, keys, why) -> None:
    model = parse_model("m", sql)
    assert (model.incremental.keys if model.incremental else None) == keys
    if why is None:
        assert model.why_overwrite is None
    else:
        assert why in (model.why_overwrite or "")


def test_inputs_include_macros_and_gold_but_not_ctes() -> None:
    model = parse_model(
        "m",
        "WITH recent AS (SELECT * FROM changes_between('orders', now() - INTERVAL 1 DAY, now())) "
        "SELECT * FROM as_of('customers', TIMESTAMP '2026-01-01') c, recent, gold.other, "
        'live."shop.public.items"',
    )
    assert set(model.inputs) == {
        Input("changelog", "orders"),
        Input("forensic", "customers"),
        Input("gold", "other"),
        Input("live", "shop.public.items"),
    }


def test_bad_files_are_reported_and_the_rest_load(tmp_path: Path) -> None:
    (tmp_path / "good.sql").write_text("SELECT 1 AS one FROM live.customers")
    (tmp_path / "Bad-Name.sql").write_text("SELECT 1 FROM live.customers")
    (tmp_path / "syntax.sql").write_text("SELEC oops FROM")
    (tmp_path / "two.sql").write_text("SELECT 1 FROM live.a; SELECT 2 FROM live.b")
    (tmp_path / "reader.sql").write_text("SELECT * FROM gold.missing")
    (tmp_path / "ping.sql").write_text("SELECT * FROM gold.pong")
    (tmp_path / "pong.sql").write_text("SELECT * FROM gold.ping")
    models, broken = load_models(tmp_path)
    assert [m.name for m in models] == ["good"]
    assert set(broken) == {"Bad-Name", "syntax", "two", "reader", "ping", "pong"}
    assert "cycle" in broken["ping"] or "cycle" in broken["pong"]
    with pytest.raises(ModelError, match="does not exist"):
        load_models(tmp_path / "nowhere")


def test_templates_parse_and_daily_sales_and_balance_history_are_incremental() -> None:
    modes = {}
    for profile in ("bank", "customers", "retail"):
        models, broken = load_models(templates_of(profile))
        assert not broken
        modes.update({m.name: m.mode for m in models})
    assert modes == {
        "customer_360": "overwrite",
        "balance_history": "incremental",
        "customer_addresses": "overwrite",
        "daily_sales": "incremental",
    }


def test_lineage_follows_ctes_and_macros_and_marks_classified_columns() -> None:
    model = parse_model(
        "m",
        "WITH t AS (SELECT customer_id, sum(amount) AS total FROM live.orders GROUP BY 1) "
        "SELECT c.id, lower(c.email) AS email, t.total, h.name AS old_name "
        "FROM live.customers c LEFT JOIN t ON t.customer_id = c.id "
        "LEFT JOIN as_of('customers', TIMESTAMP '2026-01-01') h ON h.id = c.id",
    )
    schemas = {
        Input("live", "customers"): ["id", "email", "name"],
        Input("live", "orders"): ["id", "customer_id", "amount"],
        Input("forensic", "customers"): ["id", "email", "name", "_tm_valid_from"],
    }
    pii = {("customers", "email")}
    found = model_lineage(
        model,
        ["id", "email", "total", "old_name"],
        schemas,
        lambda view, column: ("pii", "hash") if (view.name, column) in pii else None,
    )
    sources = {c.column: [(s.view, s.column, s.tag) for s in c.sources] for c in found}
    assert sources == {
        "id": [("live.customers", "id", None)],
        "email": [("live.customers", "email", "pii")],
        "total": [("live.orders", "amount", None)],
        "old_name": [("forensic.customers", "name", None)],
    }
    text = render_tree(model, found)
    assert "├── email = LOWER(c.email)  [pii: masked]" in text
    assert "│   └── live.customers.email  [pii: hash]" in text

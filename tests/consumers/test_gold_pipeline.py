"""Gold models, consumer views and masking against one real pipeline run (pipeline_run.py).

The source is truth: every template that reads live equals the same SQL (transpiled by
sqlglot) run on the source database through views that mask like the lake's; the forensic
model ends, per account, at the source's balance. The views file works in a fresh DuckDB
process without Tidemark; no classified value appears in clear in a view or a gold table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from decimal import Decimal
from pathlib import Path

import psycopg2
import psycopg2.extras
import pytest
import sqlglot
from deltalake import DeltaTable

from tests.consumers.pipeline_run import GoldRun, drop_slots, start_gold_run
from tidemark.config import ModelsConfig
from tidemark.gold import build_scheduler, lineage_text
from tidemark.pipeline import open_lake
from tidemark.query import connect, run_query
from tidemark.sinks.gold.model import load_models
from tidemark.sinks.gold.status import read_status
from tidemark.views import masking_for

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ("_tm_refreshed_at", "_tm_batch", "_tm_input_positions")
SOURCE_OF = {"customer_360": "bank", "customer_addresses": "customers", "daily_sales": "retail"}
KEYS = {
    "customer_360": ("customer_id",),
    "customer_addresses": ("customer_id",),
    "daily_sales": ("store_id", "day"),
}


@pytest.fixture(scope="module")
def run(postgres, tmp_path_factory) -> GoldRun:
    root = tmp_path_factory.mktemp("gold")
    root.chmod(0o755)
    finished = start_gold_run(postgres, root)
    yield finished
    drop_slots(finished)


def _lake_rows(run: GoldRun, sql: str) -> list[dict]:
    con = connect(run.config.lake, masking=masking_for(run.config))
    return run_query(con, sql).to_pylist()


def _masked_source_views(run: GoldRun, profile: str, conn) -> None:
    """In the source database: schema `live` with one view per table named as in the lake,
    classified columns hashed with the lake's key exactly as the lake's views do."""
    masking = masking_for(run.config)
    cur = conn.cursor()
    cur.execute("CREATE SCHEMA IF NOT EXISTS live")
    source = next(s for s in run.config.sources if s.name == profile)
    for table in source.tables:
        lake_table = source.lake_table(table)
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            table.split("."),
        )
        parts = []
        for (column,) in cur.fetchall():
            rule = masking.of(lake_table, column)
            if rule and rule[1] == "drop":
                continue
            if rule:
                key = masking.key.replace("'", "''")
                parts.append(
                    f"encode(sha256(convert_to('{key}:' || \"{column}\"::text, 'UTF8')), 'hex') "
                    f'AS "{column}"'
                )
            else:
                parts.append(f'"{column}"')
        cur.execute(
            f'CREATE OR REPLACE VIEW live."{lake_table}" AS SELECT {", ".join(parts)} FROM {table}'
        )


def _normal(row: dict) -> tuple:
    return tuple(
        (k, Decimal(v) if isinstance(v, int | float | Decimal) and not isinstance(v, bool) else v)
        for k, v in sorted(row.items())
    )


@pytest.mark.parametrize("model", sorted(SOURCE_OF))
def test_each_live_model_equals_its_sql_on_the_source(run: GoldRun, model: str) -> None:
    profile = SOURCE_OF[model]
    sql = (run.models / f"{model}.sql").read_text()
    gold = _lake_rows(run, f"SELECT * EXCLUDE ({', '.join(AUDIT)}) FROM gold.{model}")
    with psycopg2.connect(run.urls[profile]) as conn:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SET TimeZone = 'UTC'")
            _masked_source_views(run, profile, conn)
            cur.execute(sqlglot.transpile(sql, read="duckdb", write="postgres")[0])
            source = [dict(r) for r in cur.fetchall()]
    assert len(source) > 20, "the simulator made too little data to compare"
    keys = KEYS[model]
    by_key = lambda rows: {tuple(r[k] for k in keys): _normal(r) for r in rows}  # noqa: E731
    expected, found = by_key(source), by_key(gold)
    assert len(expected) == len(source) and len(found) == len(gold)
    missing = sorted(set(expected) - set(found))[:5]
    unexpected = sorted(set(found) - set(expected))[:5]
    differing = [k for k in expected if k in found and expected[k] != found[k]][:3]
    assert not missing and not unexpected and not differing, (
        missing,
        unexpected,
        [(expected[k], found[k]) for k in differing],
    )


def test_balance_history_ends_at_each_accounts_source_balance(run: GoldRun) -> None:
    """The forensic model's last day per account closes at the balance the source holds."""
    last = _lake_rows(
        run,
        "SELECT account_id, arg_max(closing_balance, day) AS balance, "
        "arg_max(closing_status, day) AS status, sum(versions) AS versions "
        "FROM gold.balance_history GROUP BY account_id",
    )
    with psycopg2.connect(run.urls["bank"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, balance, status FROM public.accounts")
        source = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
    history = {r["account_id"]: (r["balance"], r["status"]) for r in last}
    assert source and all(history.get(k) == v for k, v in source.items()), [
        (k, v, history.get(k)) for k, v in source.items() if history.get(k) != v
    ][:5]
    versions = _lake_rows(run, 'SELECT count(*) AS n FROM forensic."bank.public.accounts"')
    assert sum(r["versions"] for r in last) == versions[0]["n"]  # every version in a day


def test_incremental_models_merged_and_equal_a_full_recompute(run: GoldRun) -> None:
    models, broken = load_models(run.models)
    assert not broken
    for model in (m for m in models if m.incremental):
        status = read_status(run.config.lake, model.name)
        assert status and status["status"] == "ok", status
        history = DeltaTable(f"{run.config.lake}/gold/{model.name}").history()
        operations = {c["operation"] for c in history}
        assert "MERGE" in operations, (model.name, operations)  # batches merged groups
        columns = ", ".join(model.incremental.keys)
        full = _lake_rows(run, f"SELECT * FROM ({model.sql}) ORDER BY {columns}")
        gold = _lake_rows(
            run, f"SELECT * EXCLUDE ({', '.join(AUDIT)}) FROM gold.{model.name} ORDER BY {columns}"
        )
        assert gold == full, model.name


def test_gold_rows_carry_audit_columns(run: GoldRun) -> None:
    rows = _lake_rows(run, "SELECT * FROM gold.customer_360 LIMIT 3")
    positions = rows[0]["_tm_input_positions"]
    assert set(dict(positions) if not isinstance(positions, dict) else positions) == {
        f"bank.public.{t}" for t in ("customers", "addresses", "accounts", "transactions")
    }
    assert rows[0]["_tm_refreshed_at"] is not None and rows[0]["_tm_batch"] > 0
    status = read_status(run.config.lake, "customer_360")
    assert status["mode"] == "overwrite" and status["last_refresh"]["mode"] == "overwrite"
    assert run.failures == 0 and run.refreshes >= 4


def test_lineage_of_customer_360_column_by_column(run: GoldRun) -> None:
    status = read_status(run.config.lake, "customer_360")
    found = {
        c["column"]: sorted((s["view"], s["column"], s["tag"]) for s in c["sources"])
        for c in status["columns"]
    }
    customers, accounts = 'live."bank.public.customers"', 'live."bank.public.accounts"'
    transactions, addresses = 'live."bank.public.transactions"', 'live."bank.public.addresses"'
    expected = {
        "customer_id": [(customers, "id", None)],
        "first_name": [(customers, "first_name", None)],
        "last_name": [(customers, "last_name", None)],
        "email": [(customers, "email", "pii")],
        "segment": [(customers, "segment", None)],
        "credit_score": [(customers, "credit_score", None)],
        "account_types": [(accounts, "account_type", None)],
        "total_balance": [(accounts, "balance", None)],
        "amount_30d": [(transactions, "amount", None), (transactions, "booked_at", None)],
        "last_transaction_at": [(transactions, "booked_at", None)],
        "address_line1": [(addresses, "line1", None)],
        "address_city": [(addresses, "city", None)],
        "address_country": [(addresses, "country", None)],
    }
    for column, sources in expected.items():
        assert found[column] == sorted(sources), (column, found[column])
    text = lineage_text(run.config, "customer_360")
    assert (
        "email  [pii: masked]" in text and 'live."bank.public.customers".email  [pii: hash]' in text
    )


def test_views_file_in_a_fresh_duckdb_process_without_tidemark(run: GoldRun, tmp_path) -> None:
    views = tmp_path / "consumer.duckdb"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidemark",
            "views",
            "--config",
            str(run.config_path),
            "--duckdb",
            str(views),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    # Only DuckDB and its delta extension on the path: no Tidemark, no site-packages.
    site = Path(sysconfig.get_paths()["purelib"])
    only = tmp_path / "only-duckdb"
    only.mkdir()
    for entry in site.iterdir():
        if entry.name in ("duckdb", "duckdb_ext") or entry.name.startswith(
            ("_duckdb.", "duckdb-")  # the module, its compiled part, its dist-info
        ):
            (only / entry.name).symlink_to(entry)
    script = f"""
import json, sys
import duckdb
con = duckdb.connect({str(views)!r}, read_only=True)
con.execute("SET autoinstall_known_extensions = false")
con.execute("SET extension_directory = {str(site / "duckdb_ext" / "extensions")!r}")
con.execute("LOAD delta")
con.execute("SET TimeZone = 'UTC'")
out = {{
  "live": con.sql("SELECT count(*) FROM live.accounts").fetchone()[0],
  "full": con.sql('SELECT count(*) FROM live."bank.public.accounts"').fetchone()[0],
  "as_of": con.sql("SELECT count(*) FROM as_of('accounts', now())").fetchone()[0],
  "changes": con.sql(
      "SELECT count(*) FROM changes_between('accounts', TIMESTAMPTZ '2000-01-01', now())"
  ).fetchone()[0],
  "gold": con.sql("SELECT count(*) FROM gold.customer_360").fetchone()[0],
  "tidemark": "tidemark" in sys.modules,
}}
try:
    import tidemark
    out["tidemark"] = True
except ImportError:
    pass
print(json.dumps(out))
"""
    child = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env={"PYTHONPATH": str(only), "PATH": os.environ.get("PATH", "")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    here = _lake_rows(
        run,
        "SELECT (SELECT count(*) FROM live.accounts) AS live, "
        "(SELECT count(*) FROM changelog.accounts) AS changes, "
        "(SELECT count(*) FROM gold.customer_360) AS gold",
    )[0]
    assert seen == {
        "live": here["live"],
        "full": here["live"],
        "as_of": here["live"],
        "changes": here["changes"],
        "gold": here["gold"],
        "tidemark": False,
    }


def test_no_classified_value_in_clear_in_any_view_or_gold_table(run: GoldRun) -> None:
    clear: set[str] = set()
    for table, columns in {
        "bank.public.customers": ("email",),
        "customers.public.customers": ("email", "phone"),
        "retail.public.sales": ("customer_email",),
    }.items():
        raw = DeltaTable(f"{run.config.lake}/changelog/{table}").to_pyarrow_table(
            columns=list(columns)
        )
        for column in columns:
            clear |= {v for v in raw.column(column).to_pylist() if v}
    assert len(clear) > 50  # the raw layers keep them (no `raw: drop` here)
    masking = masking_for(run.config)
    con = connect(run.config.lake, masking=masking)
    relations = con.sql(
        "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal "
        "AND schema_name IN ('changelog', 'live', 'forensic', 'gold')"
    ).fetchall()
    assert len(relations) > 30
    for schema, name in relations:
        view = f'{schema}."{name}"'
        for (column,) in con.sql(f"SELECT column_name FROM (DESCRIBE {view})").fetchall():
            values = con.sql(f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM {view}').fetchall()
            texts = [v for (v,) in values if v]
            leaked = [
                t
                for t in texts
                if t in clear or any(c in t for c in clear if len(c) > 5 and len(t) > 40)
            ]
            assert not leaked, (view, column, leaked[:3])
    hashed = con.sql(
        'SELECT email FROM live."bank.public.customers" WHERE email IS NOT NULL LIMIT 1'
    )
    digest = hashed.fetchone()[0]
    assert any(masking.hashes(c) == digest for c in clear)


def test_a_failing_model_keeps_its_last_good_version(run: GoldRun, tmp_path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "fragile.sql"
    model.write_text('SELECT id, segment FROM live."bank.public.customers"')
    config = run.config.model_copy(update={"models": ModelsConfig(path=str(folder))})
    lake = open_lake(config)
    try:

        def refresh() -> None:
            gold = build_scheduler(config, lake)
            assert gold is not None
            gold.refresh({"fragile"}, gold.pin(), batch=lake.last_batch_id())

        refresh()
        good = _lake_rows(run, "SELECT * FROM gold.fragile ORDER BY id")
        uri = f"{run.config.lake}/gold/fragile"
        version = DeltaTable(uri).version()
        assert len(good) > 20 and read_status(run.config.lake, "fragile")["status"] == "ok"
        # Fails while running (a text that is no integer), then before writing (a _tm_ name).
        broken = {
            'SELECT id, CAST(segment AS INTEGER) AS segment FROM live."bank.public.customers"': (
                "Conversion Error"
            ),
            'SELECT id, segment AS _tm_segment FROM live."bank.public.customers"': "_tm_segment",
        }
        for number, (sql, reason) in enumerate(broken.items(), 1):
            model.write_text(sql)
            refresh()
            status = read_status(run.config.lake, "fragile")
            assert status["status"] == "failed" and reason in status["last_error"]["message"]
            assert status["last_refresh"]["version"] == version  # the last good refresh stays
            assert DeltaTable(uri).version() == version
            assert _lake_rows(run, "SELECT * FROM gold.fragile ORDER BY id") == good
            failures = DeltaTable(f"{run.config.lake}/_tidemark/gold_failures").to_pyarrow_table()
            mine = sorted(
                (r for r in failures.to_pylist() if r["model"] == "fragile"),
                key=lambda r: r["failed_at"],
            )
            assert len(mine) == number and reason in mine[-1]["error"]
    finally:
        lake.close()


def test_a_raw_drop_column_never_reaches_the_lake_and_verify_passes(run: GoldRun) -> None:
    """bank's `phone` is tagged `secret: {raw: drop}`: Debezium never captures it, no layer
    has the column, and verify (which leaves it out) finds the source and lake equal."""
    from tidemark.verify import verify_source

    for layer in ("changelog", "live", "forensic"):
        dt = DeltaTable(f"{run.config.lake}/{layer}/bank.public.customers")
        names = [f.name for f in dt.schema().fields]
        assert "phone" not in names and "email" in names, (layer, names)
    kept = DeltaTable(f"{run.config.lake}/live/customers.public.customers")
    assert "phone" in [f.name for f in kept.schema().fields]  # tagged pii there: raw keeps it
    with psycopg2.connect(run.urls["bank"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(phone) FROM public.customers")
        assert cur.fetchone()[0] > 10  # the source has phones
    bank = next(s for s in run.config.sources if s.name == "bank")
    report = verify_source(run.config, bank, timeout=30)
    assert report.ok, [t for t in report.tables if not t.ok]

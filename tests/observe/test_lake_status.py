"""`tidemark status` from the lake's logs: local and S3 lakes, an empty lake, the lag and the
SLA check against a real Postgres, the batch log and dead letter panels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from deltalake import DeltaTable

from tests.observe.lake_story import TABLES, LakeStory, minutes_ago, write_config
from tidemark.config import load_config
from tidemark.connectors.postgres.settings import replication_name
from tidemark.kernel.columns import Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.observe.records import dead_letter_counts, dead_letters, latest_batches
from tidemark.observe.report import Observer
from tidemark.sinks.progress import ProgressMarks, read_marks

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "postgresql://u:p@127.0.0.1:1/none"  # a source that cannot be reached


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_STATE": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "tidemark", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _story(root: str, **options) -> LakeStory:
    story = LakeStory(root, **options)
    story.batch("public.customers", range(1, 41), at=minutes_ago(5))
    story.batch("public.accounts", range(1, 21), at=minutes_ago(4))
    story.batch("public.customers", range(1, 11), at=minutes_ago(3), op="u")
    story.batch("public.customers", range(1, 4), at=minutes_ago(2), op="d")
    return story


def test_status_reads_only_the_delta_logs(tmp_path) -> None:
    """Rows, positions and commit times come from the Delta log: the figures equal the data,
    and stay the same once every data file is gone (the old status read the data and
    took 8.3 s on a demo lake)."""
    lake = tmp_path / "lake"
    _story(str(lake)).close()
    config = load_config(write_config(tmp_path / "p.yaml", lake=str(lake), dsn=NOWHERE))
    before = Observer(config).report()
    customers = before.table("shop.public.customers")
    assert customers.rows == {"changelog": 53, "live": 37, "forensic": 50}
    assert before.table("shop.public.accounts").rows == {
        "changelog": 20,
        "live": 20,
        "forensic": 20,
    }
    events = DeltaTable(str(lake / "changelog" / "shop.public.customers")).to_pyarrow_table()
    for layer in customers.layers:
        data = DeltaTable(str(lake / layer.layer / "shop.public.customers")).to_pyarrow_table()
        assert layer.rows == data.num_rows
        assert layer.position == max(events.column("_tm_position").to_pylist())
    for data_file in lake.rglob("*.parquet"):
        if "_delta_log" not in data_file.parts:
            data_file.unlink()
    after = Observer(config).report()

    def figures(report):
        return [
            (
                t.table,
                t.state,
                t.rows,
                t.position,
                [(x.layer, x.rows, x.position) for x in t.layers],
            )
            for t in report.sources[0].tables
        ]

    assert figures(after) == figures(before)


def test_an_empty_lake_and_an_unreachable_source(tmp_path) -> None:
    config_path = write_config(tmp_path / "p.yaml", lake=str(tmp_path / "none"), dsn=NOWHERE)
    report = Observer(load_config(config_path)).report()
    assert [t.state for t in report.sources[0].tables] == ["waiting", "waiting"]
    assert report.sources[0].error and "127.0.0.1" in report.sources[0].error
    assert "p@" not in report.sources[0].error  # never a password
    assert report.breaches == [] and report.dead_letters == 0
    checked = _cli("status", "--check", "--config", str(config_path), state=tmp_path / "s")
    assert checked.returncode == 0, checked.stderr
    assert "waiting" in checked.stdout


def test_batches_and_dead_letters_panels(tmp_path) -> None:
    story = _story(str(tmp_path / "lake"))
    story.dead_letters("shop.public.customers", 3, reason="cannot decode `x`: not an integer")
    story.dead_letters(None, 2, reason="envelope without schema")
    story.lake.dead_letters.append(  # one file mixing two tables: counted by reading it
        [
            DeadLetter(t, None, "{}", "mixed", "test", None)
            for t in ("shop.public.customers", "shop.public.accounts")
        ],
        batch_id=99,
        stage="apply",
    )
    story.close()
    meta = Observer(
        load_config(write_config(tmp_path / "p.yaml", lake=str(tmp_path / "lake"), dsn=NOWHERE))
    ).meta
    newest = latest_batches(meta, limit=2)
    assert [b.batch_id for b in newest] == [4, 3]
    assert newest[0].tables["shop.public.customers"]["live_deletes"] == 3
    assert [b.batch_id for b in latest_batches(meta, table="shop.public.accounts")] == [2]
    assert len(latest_batches(meta, limit=100)) == 4
    assert latest_batches(meta, since=datetime.now(UTC) + timedelta(minutes=1)) == []
    counts = dead_letter_counts(meta)
    assert counts.counts == {
        "shop.public.customers": 4,
        "(undecodable)": 2,
        "shop.public.accounts": 1,
    }
    assert {d.table for d in dead_letters(meta, stage="apply")} == {
        "shop.public.customers",
        "shop.public.accounts",
    }
    found = dead_letters(meta, text="NOT AN INTEGER")
    assert len(found) == 3 and all("x" in (d.raw_value or "") for d in found)
    assert len(dead_letters(meta, table="(undecodable)")) == 2
    assert len(dead_letters(meta, limit=1)) == 1


@pytest.mark.s3
def test_an_s3_lake(s3, tmp_path) -> None:
    """The same status, pages and caught-up marks on an object store."""
    import boto3

    bucket = f"obs-{os.getpid()}"
    boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/lake"
    story = _story(root, storage_options=s3.storage_options)
    story.dead_letters("shop.public.accounts", 2, reason="bad row")
    story.close()
    marks = ProgressMarks(root, storage_options=s3.storage_options, min_interval_s=0)
    assert marks.caught_up("shop")
    assert [m.source for m in read_marks(root, s3.storage_options)] == ["shop"]
    config = load_config(
        write_config(
            tmp_path / "p.yaml", lake=root, dsn=NOWHERE, storage_options=s3.storage_options
        )
    )
    observer = Observer(config)
    report = observer.report()
    assert report.table("shop.public.customers").rows == {
        "changelog": 53,
        "live": 37,
        "forensic": 50,
    }
    assert report.table("shop.public.accounts").dead_letters == 2
    assert report.sources[0].caught_up_at is not None
    assert len(latest_batches(observer.meta, limit=10)) == 4
    _serve_and_get(
        observer, ["/", "/tables/shop.public.accounts", "/batches", "/dead-letters", "/lineage"]
    )


def _serve_and_get(observer: Observer, paths: list[str]) -> dict[str, str]:
    from tidemark.observe.metrics import status_registry
    from tidemark.web.app import create_app
    from tidemark.web.server import free_port, start_in_thread

    server = start_in_thread(
        create_app(observer, registry=status_registry(observer)), host="127.0.0.1", port=free_port()
    )
    pages = {}
    try:
        for path in paths:
            with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30) as response:
                assert response.status == 200, path
                pages[path] = response.read().decode()
    finally:
        server.stop()
    return pages


def test_pages_and_api_on_an_empty_lake(tmp_path) -> None:
    config = load_config(
        write_config(tmp_path / "p.yaml", lake=str(tmp_path / "none"), dsn=NOWHERE)
    )
    pages = _serve_and_get(
        Observer(config),
        ["/", "/batches", "/dead-letters", "/lineage", "/api/status", "/api/batches", "/metrics"],
    )
    assert "waiting" in pages["/"] and "No batches yet" in pages["/batches"]
    assert json.loads(pages["/api/batches"]) == []
    assert "tidemark_table_state" in pages["/metrics"]


def _slot_with_lag(url: str, slot: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        cur.execute("CREATE TABLE IF NOT EXISTS noise (n int)")
        cur.execute("INSERT INTO noise SELECT generate_series(1, 1000)")


def test_lag_is_never_negative_and_counts_from_the_source_newest_commit(
    fresh_database, tmp_path
) -> None:
    """The lake holds a change stamped after the source's newest commit (clocks, rounding, or
    a batch committed while status reads): the lag is 0, never negative (the old status
    printed `-3.2 s`). Then a commit 100 s after the lake's newest change: the lag is ~100 s,
    the live SLA (60 s) is breached, and `status --check` exits 1 naming each table."""
    url = fresh_database()
    slot = replication_name("obs", "shop")
    _slot_with_lag(url, slot)
    lake = str(tmp_path / "lake")
    story = LakeStory(lake)
    story.batch("public.customers", range(1, 5), at=datetime.now(UTC) + timedelta(seconds=30))
    config_path = write_config(tmp_path / "p.yaml", lake=lake, dsn=url)
    report = Observer(load_config(config_path)).report()
    source = report.sources[0]
    assert source.slot == slot and source.capture == "stopped" and source.lag_bytes > 0
    assert source.commit_times and source.lag_s == 0.0
    assert all((x.freshness_s or 0) >= 0 for t in source.tables for x in t.layers)

    story.close()

    old = datetime.now(UTC) - timedelta(seconds=100)
    lake2 = str(tmp_path / "lake2")
    story2 = LakeStory(lake2)  # a lake whose newest change is 100 s old...
    story2.batch("public.customers", range(1, 5), at=old)
    story2.batch("public.accounts", range(1, 3), at=old)
    story2.close()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO noise VALUES (1)")  # ...and a source that committed since
    config2 = write_config(tmp_path / "p2.yaml", lake=lake2, dsn=url)
    report = Observer(load_config(config2)).report()
    lag = report.sources[0].lag_s
    assert 95 <= lag <= 130, lag
    assert {(b.table, b.layer) for b in report.breaches} == {(f"shop.{t}", "live") for t in TABLES}
    checked = _cli("status", "--check", "--config", str(config2), state=tmp_path / "s")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    for table in TABLES:
        assert f"SLA breached: shop.{table} live" in checked.stderr
    relaxed = write_config(tmp_path / "p3.yaml", lake=lake2, dsn=url, sla={"*": {"live": "1h"}})
    fine = _cli("status", "--check", "--json", "--config", str(relaxed), state=tmp_path / "s")
    assert fine.returncode == 0, fine.stderr
    body = json.loads(fine.stdout)
    assert body["breaches"] == [] and body["sources"][0]["lag_s"] >= 95
    layers = {x["layer"]: x for x in body["sources"][0]["tables"][0]["layers"]}
    assert layers["live"]["colour"] == "green" and layers["forensic"]["sla_s"] == 600
    assert Layer.LIVE.value in layers


GOLD_STATUS = {  # what the gold model refresher writes (docs/consumers.md, format 1)
    "format": 1,
    "model": "customer_accounts",
    "status": "ok",
    "table": "gold/customer_accounts",
    "inputs": ['live."shop.public.customers"', "live.accounts"],
    "mode": "overwrite",
    "last_refresh": {"at": "2026-12-06T22:52:36+00:00", "batch": 9},
    "last_error": None,
    "columns": [
        {
            "column": "email",
            "expression": "c.email",
            "sources": [{"view": 'live."shop.public.customers"', "column": "email", "tag": "pii"}],
        },
        {"column": "accounts", "expression": "count(a.id)", "sources": []},
    ],
}


def test_lineage_draws_gold_models_from_their_status_files(tmp_path) -> None:
    lake = tmp_path / "lake"
    _story(str(lake)).close()
    folder = lake / "_tidemark" / "gold"
    folder.mkdir(parents=True)
    (folder / "customer_accounts.json").write_text(json.dumps(GOLD_STATUS))
    failed = {
        **GOLD_STATUS,
        "model": "broken",
        "status": "failed",
        "inputs": ["gold.customer_accounts"],
    }
    failed["last_error"] = {"message": "Binder Error: no column `x`"}
    (folder / "broken.json").write_text(json.dumps(failed))
    (folder / "half.json").write_text('{"format": 1, "model": ')  # being rewritten: skipped
    config = load_config(write_config(tmp_path / "p.yaml", lake=str(lake), dsn=NOWHERE))
    observer = Observer(config)
    pages = _serve_and_get(observer, ["/api/lineage", "/lineage"])
    graph = json.loads(pages["/api/lineage"])
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert ("live:shop.public.customers", "gold:customer_accounts") in edges
    assert ("live:shop.public.accounts", "gold:customer_accounts") in edges  # a short name
    assert ("gold:customer_accounts", "gold:broken") in edges
    assert ("source:shop.public.customers", "changelog:shop.public.customers") in edges
    assert [m["name"] for m in graph["models"]] == ["broken", "customer_accounts"]
    assert graph["models"][1]["columns"][0]["tags"] == ["pii"]
    page = pages["/lineage"]
    assert 'id="model-customer_accounts"' in page and "Binder Error" in page and "pii" in page
    assert 'href="/tables/shop.public.accounts"' in page

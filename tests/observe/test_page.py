"""The status page against a real running pipeline, in a real browser.

One pipeline for the whole module (real Postgres, the real Debezium engine through `tidemark
run --metrics-port`, the bank simulator writing, a poison table whose events go to the dead
letters) and one `tidemark serve`. Headless Chromium from Debian's packages, driven by
Playwright (`executable_path=/usr/bin/chromium`, never a downloaded browser), reads the
pages; screenshots land in the test's tmp dir (and in `$TIDEMARK_SCREENSHOTS` when set: that
is how docs/status-page.png is made). The last test stops the pipeline while the source goes
on changing: `status --check` exits 1 naming the tables, the page turns red.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pipeline.reliability import Pipeline, SimulatorThread, set_up, wait_streaming
from tidemark.connectors.postgres.cluster import free_port
from tidemark.connectors.postgres.settings import replication_name
from tidemark.simulator.runner import Simulator

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

ROOT = Path(__file__).resolve().parents[2]
BANK = ["public.customers", "public.accounts", "public.transactions"]
TABLES = [f"bank.{t}" for t in BANK]
POISON = "bank.public.poison"
CHROMIUM = "/usr/bin/chromium"
SLA = {"*": {"live": "20s", "forensic": "30s"}}


@dataclass
class Running:
    """The module's pipeline, simulator and status page."""

    url: str
    config: Path
    state: Path
    tmp: Path
    pipeline: Pipeline
    simulator: SimulatorThread
    serve: subprocess.Popen
    page: str
    metrics: str

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "TIDEMARK_STATE": str(self.state)}
        return subprocess.run(
            [sys.executable, "-m", "tidemark", *args, "--config", str(self.config)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def api(self, path: str) -> object:
        return json.loads(get(self.page + path.lstrip("/")))


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read().decode()


def wait_for(check, *, timeout: float, every: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@pytest.fixture(scope="module")
def running(postgres, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    tmp.chmod(0o755)
    admin = psycopg2.connect(postgres.url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('CREATE DATABASE "page"')
    admin.close()
    url = postgres.url_for("page")
    Simulator(url, profile="bank").setup()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE public.poison (id int PRIMARY KEY, n int)")
        cur.execute("INSERT INTO public.poison SELECT g, g FROM generate_series(1, 3) g")
    import yaml

    config = tmp / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "page",
                "lake": str(tmp / "lake"),
                "sources": [
                    {
                        "name": "bank",
                        "kind": "postgres",
                        "dsn": url,
                        "tables": [*BANK, "public.poison"],
                    }
                ],
                "batching": {"max_events": 2000, "max_latency_ms": 300},
                "debezium": {"heartbeat_ms": 500},
                "sla": SLA,
            }
        )
    )
    metrics_port, page_port = free_port(), free_port()
    pipeline = Pipeline(config, tmp / "state", tmp / "run.log")
    env = {**os.environ, "TIDEMARK_STATE": str(tmp / "state")}
    pipeline.starts = 1
    set_up(config, tmp / "state")
    pipeline.process = subprocess.Popen(  # `tidemark run` as a user starts it, with metrics
        [
            sys.executable,
            "-m",
            "tidemark",
            "-v",
            "run",
            "--config",
            str(config),
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=open(tmp / "run.log", "a"),
        stderr=subprocess.STDOUT,
    )
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidemark",
            "serve",
            "--config",
            str(config),
            "--port",
            str(page_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=open(tmp / "serve.log", "w"),
        stderr=subprocess.STDOUT,
    )
    simulator = SimulatorThread(url, tmp / "ledger.jsonl", rate=150)
    handle = Running(
        url,
        config,
        tmp / "state",
        tmp,
        pipeline,
        simulator,
        serve,
        f"http://127.0.0.1:{page_port}/",
        f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        wait_streaming(url, replication_name("page", "bank"), pipeline=pipeline, timeout=180)
        simulator.start()
        wait_for(lambda: get(handle.page + "healthz") == "ok", timeout=60, what="serve")
        wait_for(
            lambda: all(
                t["rows"].get("live", 0) > 0
                for t in handle.api("api/status")["sources"][0]["tables"]
            ),
            timeout=120,
            what="every table in the lake",
        )
        yield handle
    finally:
        if simulator.thread is not None:
            simulator.stop.set()
            simulator.thread.join(60)
        serve.terminate()
        serve.wait(30)
        with pipeline:
            if pipeline.alive():
                pipeline.terminate()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


def screenshot(page, running: Running, name: str, *, publish: bool = False) -> Path:
    """Save a screenshot under the test's tmp dir; `publish`ed ones also go to
    `$TIDEMARK_SCREENSHOTS` when it is set (how docs/status-page.png is made)."""
    path = running.tmp / "screenshots" / name
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    copy_to = os.environ.get("TIDEMARK_SCREENSHOTS")
    if copy_to and publish:
        shutil.copy(path, Path(copy_to) / name)
    return path


def test_the_page_shows_every_table_filling_and_fresh(running, browser) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(running.page)

    def fresh() -> bool:
        page.reload()
        rows = {r.get_attribute("data-table"): r for r in page.locator("tr[data-table]").all()}
        if set(rows) != {*TABLES, POISON}:
            return False
        bank = [rows[t] for t in TABLES]
        return all(
            r.get_attribute("data-state") == "streaming" and r.locator(".fresh.green").count() == 2
            for r in bank
        )

    wait_for(fresh, timeout=90, every=2, what="every bank table streaming and green")

    def changelog_rows() -> int:
        page.reload()
        cell = page.locator(f"tr[data-table='{TABLES[2]}'] td.num").first.inner_text()
        return int(cell.split(" / ")[0].replace(",", ""))

    first = changelog_rows()
    wait_for(lambda: changelog_rows() > first, timeout=30, every=1, what="the changelog to grow")
    assert page.locator(".banner.red").count() == 0
    assert "capture" in page.inner_text("#source-bank") and "streaming" in page.inner_text(
        "#source-bank"
    )
    assert page.locator("svg.spark").count() >= len(TABLES)
    screenshot(page, running, "status-page.png", publish=True)

    # A phone: the page fits the screen (wide tables scroll inside their own box).
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.goto(running.page)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 391
    screenshot(phone, running, "status-page-phone.png")

    # A table's page, from its link.
    page.click(f"a[href='/tables/{TABLES[1]}']")
    page.wait_for_url(f"**/tables/{TABLES[1]}")
    layers = {r.get_attribute("data-layer"): r for r in page.locator("tr[data-layer]").all()}
    assert set(layers) == {"changelog", "live", "forensic"}
    assert layers["live"].get_attribute("data-colour") == "green"
    assert page.locator("table.batches tbody tr").count() > 0
    screenshot(page, running, "table-page.png")


def test_lineage_batches_and_dead_letters(running, browser) -> None:
    # A captured column changes type: that table's events go to the dead letters.
    with psycopg2.connect(running.url) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE public.poison ALTER COLUMN n TYPE text USING 'x' || n")
        cur.execute("UPDATE public.poison SET n = 'poison' WHERE id = 1")
    wait_for(
        lambda: running.api(f"api/tables/{POISON}")["state"] == "failing",
        timeout=60,
        what="the poisoned table to be failing",
    )
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(running.page + "lineage")
    for table in TABLES:
        for layer in ("source", "changelog", "live", "forensic"):
            assert page.locator(f"svg.lineage g[id='{layer}:{table}']").count() == 1
    page.click(f"svg.lineage a[href='/tables/{TABLES[0]}'] >> nth=0")
    page.wait_for_url(f"**/tables/{TABLES[0]}")
    graph = running.api("api/lineage")
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert (f"source:{TABLES[0]}", f"live:{TABLES[0]}") in edges

    page.goto(running.page + "batches")
    page.select_option("select[name=table]", TABLES[0])
    page.fill("input[name=limit]", "5")
    page.click("form.filters button")
    page.wait_for_url("**/batches?*")
    rows = page.locator("table.batches tbody tr")
    assert 1 <= rows.count() <= 5
    for i in range(rows.count()):
        assert "customers" in rows.nth(i).inner_text()
    closed = {b["closed_by"] for b in running.api("api/batches?limit=50")}
    assert closed and closed <= {"size", "latency", "force", "load"}  # load: a table loaded

    page.goto(running.page + "dead-letters")
    page.fill("input[name=q]", "poison")
    page.click("form.filters button")
    page.wait_for_url("**/dead-letters?*")
    letters = page.locator("details.letter")
    assert letters.count() >= 1
    letters.first.click()
    assert POISON in letters.first.inner_text() and "poison" in letters.first.inner_text()
    screenshot(page, running, "dead-letters.png")
    api = running.api(f"api/dead-letters?table={POISON}")
    assert api and all(d["table"] == POISON and d["reason"] for d in api)


def _families(url: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(get(url)):
        found.setdefault(family.name, []).extend(family.samples)
    return found


def test_metrics_of_run_and_serve(running) -> None:
    before = {
        t["table"]: t["rows"]["changelog"]
        for t in running.api("api/status")["sources"][0]["tables"]
    }
    run = _families(running.metrics)
    time.sleep(2)  # past the page's report cache: `after` is read after the scrape
    after = {
        t["table"]: t["rows"]["changelog"]
        for t in running.api("api/status")["sources"][0]["tables"]
    }
    events = {
        s.labels["table"]: s.value for s in run["tidemark_events"] if s.name.endswith("_total")
    }
    for table in TABLES:  # every event the process committed is in the changelog, once
        assert before[table] <= events[table] <= after[table], (table, before, events, after)
    assert sum(s.value for s in run["tidemark_batches"] if s.name.endswith("_total")) > 0
    commits = {
        s.labels["layer"]: s.value
        for s in run["tidemark_commit_seconds"]
        if s.name.endswith("_count")
    }
    assert set(commits) == {"changelog", "live", "forensic"} and min(commits.values()) > 0
    assert run["tidemark_lag_seconds"][0].value >= 0
    assert {s.labels["op"] for s in run["tidemark_layer_rows"]} >= {"append", "upsert", "insert"}
    assert run["tidemark_dead_letters"][0].value >= 1  # the poison table's events
    assert "tidemark_retries" in run and "tidemark_engine_reopens" in run
    # `run` and `serve` expose the same status figures (freshness per table and layer).
    for url in (running.metrics, running.page + "metrics"):
        status = _families(url)
        fresh = {
            (s.labels["table"], s.labels["layer"]) for s in status["tidemark_freshness_seconds"]
        }
        assert fresh >= {(t, layer) for t in TABLES for layer in ("changelog", "live", "forensic")}
        assert all(s.value >= 0 for s in status["tidemark_freshness_seconds"])
        states = {
            s.labels["table"]: s.labels["state"]
            for s in status["tidemark_table_state"]
            if s.value == 1
        }
        assert states[POISON] == "failing"
        stored = {s.labels["table"]: s.value for s in status["tidemark_dead_letters_stored"]}
        assert stored[POISON] >= 1
        assert status["tidemark_source_lag_bytes"][0].value >= 0


@pytest.mark.slow  # waits out a 20 s SLA; the default run stays under 15 min
def test_an_idle_pipeline_is_caught_up_then_a_stopped_one_breaches_its_sla(
    running, browser
) -> None:
    running.simulator.finish()
    # Idle: the runner records that it is caught up; freshness stays green however long.
    marked = wait_for(
        lambda: running.api("api/status")["sources"][0]["caught_up_at"],
        timeout=60,
        what="a caught-up mark",
    )
    assert marked
    report = running.api("api/status")
    for table in report["sources"][0]["tables"]:
        if table["table"] in TABLES:
            assert table["state"] == "streaming", table
            assert all(x["colour"] == "green" for x in table["layers"] if x["sla_s"]), table

    # Stopped while the source goes on: freshness grows past the SLA.
    assert running.pipeline.terminate() == 0, running.pipeline.log.read_text()[-3000:]
    writer = SimulatorThread(running.url, running.tmp / "ledger2.jsonl", rate=50)
    writer.start()
    try:

        def check() -> subprocess.CompletedProcess | None:
            result = running.cli("status", "--check")  # the poison table breaches already
            named = all(f"SLA breached: {t} live" in result.stderr for t in TABLES)
            return result if result.returncode == 1 and named else None

        breached = wait_for(check, timeout=90, every=3, what="status --check to see the breach")
    finally:
        writer.finish()
    assert "behind (target 20 s)" in breached.stderr
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(running.page)
    assert page.locator(".banner.red").count() == 1
    for table in TABLES:
        row = page.locator(f"tr[data-table='{table}']")
        assert row.get_attribute("data-state") == "stopped"
        assert row.locator(".fresh.red").count() >= 1
    screenshot(page, running, "status-page-breached.png")
    status = _families(running.page + "metrics")
    breaches = {
        (s.labels["table"], s.labels["layer"])
        for s in status["tidemark_sla_breached"]
        if s.value == 1
    }
    assert {(t, "live") for t in TABLES} <= breaches

    # The lake stands still now: the API and `tidemark status --json` give the same figures.
    def figures(report: dict) -> list:
        return [
            (
                t["table"],
                t["state"],
                t["rows"],
                t["position"],
                t["dead_letters"],
                [(x["layer"], x["rows"], x["position"], x["committed_at"]) for x in t["layers"]],
            )
            for s in report["sources"]
            for t in s["tables"]
        ]

    time.sleep(1.5)  # past the page's one-second report cache
    assert figures(json.loads(running.cli("status", "--json").stdout)) == figures(
        running.api("api/status")
    )

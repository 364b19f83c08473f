"""One real pipeline run shared by the consumer tests: three simulator databases (bank,
customers, retail) captured by one embedded pipeline with every profile's gold templates.

Real Postgres, the real Debezium engine, real Delta tables: the simulators write before the
pipeline starts (the snapshot) and while it streams; the pipeline catches up, the gold models
refresh after the batches, and the run stops so the tests compare a quiet source with the lake.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import yaml

from tidemark.config import PipelineConfig, load_config
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.pipeline import attach_gold, build_runner, open_lake, run_until, start_jvm_for
from tidemark.simulator.runner import Simulator
from tidemark.up import templates_of, wait_caught_up, wait_idle

PROFILES = ("bank", "customers", "retail")
CLASSIFY = {
    "bank.public.customers": {"email": "pii", "phone": "secret"},
    "customers.public.customers": {"email": "pii", "phone": "pii"},
    "retail.public.sales": {"customer_email": "pii"},
}
TAGS = {"secret": {"mask": "drop", "raw": "drop"}}  # bank's phone is never captured


@dataclass
class GoldRun:
    """The finished run: its config and the source databases (profile -> URL)."""

    config: PipelineConfig
    config_path: Path
    urls: dict[str, str]
    models: Path
    refreshes: int
    failures: int


def create_database(admin_url: str, name: str) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def simulate(urls: dict[str, str], changes: int, rate: float | None) -> None:
    """Run every profile's simulator side by side until each wrote `changes` row changes."""
    errors: list[BaseException] = []

    def one(profile: str) -> None:
        try:
            Simulator(urls[profile], profile=profile, max_changes=changes, rate=rate).run()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in PROFILES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def start_gold_run(postgres, root: Path, *, changes: int = 600) -> GoldRun:
    """Set up, run and stop the shared pipeline (see the module doc)."""
    tag = uuid.uuid4().hex[:8]
    urls = {}
    for profile in PROFILES:
        name = f"g_{profile}_{tag}"
        create_database(postgres.url, name)
        urls[profile] = postgres.url_for(name)
        Simulator(urls[profile], profile=profile).setup()
    simulate(urls, changes // 3, None)  # rows for the snapshot
    models = root / "models"
    models.mkdir()
    for profile in PROFILES:
        for sql in templates_of(profile).glob("*.sql"):
            shutil.copy(sql, models / sql.name)
    pipeline = f"gold{tag}"
    document = {
        "pipeline": pipeline,
        "lake": str(root / "lake"),
        "sources": [
            {
                "name": profile,
                "kind": "postgres",
                "dsn": urls[profile],
                "tables": [
                    f"public.{t.name}"
                    for t in Simulator(urls[profile], profile=profile).profile.tables
                ],
            }
            for profile in PROFILES
        ],
        "batching": {"max_events": 2000, "max_latency_ms": 300},
        "debezium": {"heartbeat_ms": 500},
        "models": {"path": "models"},
        "classify": CLASSIFY,
        "tags": TAGS,
    }
    config_path = root / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    config = load_config(config_path)
    state = root / "state"
    start_jvm_for(config, state)
    lake = open_lake(config)
    gold, on_batch = attach_gold(config, lake)
    assert gold is not None
    runner, _ = build_runner(config, state=state, lake=lake, on_batch=on_batch)
    stop = threading.Event()
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            outcome["stats"] = run_until(runner, stop)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    try:
        assert wait_idle(runner, timeout=180), "the pipeline did not finish its snapshot"
        simulate(urls, changes, 400.0)  # streamed changes
        for profile in PROFILES:
            slot = replication_name(pipeline, profile)
            assert wait_caught_up(runner, url=urls[profile], slot=slot, timeout=120)
    finally:
        stop.set()
        thread.join(120)
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        assert gold.wait_idle(timeout=180), "the gold models did not finish refreshing"
        gold.close()
        lake.close()
    return GoldRun(config, config_path, urls, models, gold.refreshes, gold.failures)


def drop_slots(run: GoldRun) -> None:
    """The suite shares one cluster (max_replication_slots = 20): leave no slot behind."""
    for profile, url in run.urls.items():
        try:
            drop_slot(url, replication_name(run.config.pipeline, profile))
        except psycopg2.Error:
            pass

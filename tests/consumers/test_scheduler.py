"""The gold scheduler on a hand-built lake: interval refreshes run on their clock without any
batch; batch models run only when a batch touched their inputs; a model whose input does not
exist yet waits instead of failing."""

from __future__ import annotations

import time
from pathlib import Path

from tests.pipeline.handmade_lake import build, story
from tidemark.config import ModelsConfig
from tidemark.sinks.gold.model import load_models
from tidemark.sinks.gold.scheduler import GoldScheduler
from tidemark.sinks.gold.status import read_status
from tidemark.sinks.lake import Lake
from tidemark.sinks.views.masking import Masking


def test_interval_batch_and_waiting_models(tmp_path: Path) -> None:
    lake_root = tmp_path / "lake"
    build(lake_root, "shop.public.customers", story())
    models = tmp_path / "models"
    models.mkdir()
    (models / "ticking.sql").write_text(
        'SELECT count(*) AS n, max(name) AS top FROM live."shop.public.customers"'
    )
    (models / "on_batch.sql").write_text("SELECT id, name FROM live.customers")
    (models / "early.sql").write_text("SELECT * FROM live.orders")
    settings = ModelsConfig(path=str(models), refresh={"*": "batch", "ticking": "1s"})
    lake = Lake(str(lake_root), app_id="tidemark:demo")
    loaded, broken = load_models(models)
    assert not broken
    gold = GoldScheduler(
        lake,
        tables=["shop.public.customers", "shop.public.orders"],
        models=loaded,
        refresh_seconds=settings.refresh_seconds,
        masking=Masking(),
    )
    try:
        gold.start()  # every model once
        assert gold.wait_idle(60)
        status = {m: read_status(str(lake_root), m) for m in ("ticking", "on_batch", "early")}
        assert status["ticking"]["status"] == status["on_batch"]["status"] == "ok"
        assert status["early"]["status"] == "waiting"
        assert "live.orders" in status["early"]["waiting_for"]
        first = status["on_batch"]["last_refresh"]["at"]
        ticks = status["ticking"]["last_refresh"]["at"]
        time.sleep(3.5)  # no batch: only the interval model runs again
        assert gold.wait_idle(60)
        assert read_status(str(lake_root), "on_batch")["last_refresh"]["at"] == first
        assert read_status(str(lake_root), "ticking")["last_refresh"]["at"] > ticks
        gold.on_batch(7, {"shop.public.orders": 3})  # touches none of on_batch's inputs
        assert gold.wait_idle(60)
        assert read_status(str(lake_root), "on_batch")["last_refresh"]["at"] == first
        gold.on_batch(8, {"shop.public.customers": 2})
        assert gold.wait_idle(60)
        again = read_status(str(lake_root), "on_batch")["last_refresh"]
        assert again["at"] > first and again["batch"] == 8
    finally:
        gold.close()
        lake.close()
    assert gold.failures == 0

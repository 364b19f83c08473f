"""The loader under start-up reconciliation: what it armed stays armed, a table added is loaded.

A fresh start loads every table with the parallel loader and streams on from the loads'
slot. The lake's record of the source (the batch log) then says the tables are armed: the
next start resumes from the lake's offsets and loads nothing again (no snapshot of any
kind). A table added to the config is new to the lake: start-up arms it alone, the loader
loads it, the others stream on; changes made meanwhile to every table arrive once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.loading.support import Running, config_for, execute, fetch, layer, new_database
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.kernel.positions import SourceRecord
from tidemark.pipeline import open_lake
from tidemark.startload import LOAD_PREFIX
from tidemark.startup import SourceStart
from tidemark.stream_processors.loading.spec import LoadResult
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


def _record(config) -> SourceRecord:
    lake = open_lake(config)
    try:
        return SourceRecord.from_json(lake.source_records()["src"])
    finally:
        lake.close()


def _run(config, state: Path, url: str, marker: int, change: str | None = None):
    starts: list[SourceStart] = []
    loaded: list[LoadResult] = []
    run = Running(
        config,
        state,
        on_start=lambda _source, start: starts.append(start),
        load_done=loaded.append,
    )
    try:
        run.wait_streaming()
        if change:
            execute(url, change)
        run.wait_for(url, "tm_sync", marker)
    finally:
        run.stop()
    return starts[0], sorted(r.table for r in loaded)


def test_loaded_tables_stay_armed_and_a_table_added_is_loaded_alone(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    execute(
        url,
        "CREATE TABLE public.tm_sync (id int PRIMARY KEY)",
        "CREATE TABLE public.a (id int PRIMARY KEY, v text)",
        "CREATE TABLE public.b (id int PRIMARY KEY, v text)",
        "INSERT INTO public.a SELECT g, 'a' || g FROM generate_series(1, 3000) g",
        "INSERT INTO public.b SELECT g, 'b' || g FROM generate_series(1, 2000) g",
    )
    name = "restart"
    first = config_for(url, tmp_path / "lake", ["public.a", "public.tm_sync"], name=name)
    state = tmp_path / "state"
    try:
        start, loaded = _run(first, state, url, 1, "UPDATE public.a SET v = 'x' WHERE id = 1")
        assert start.fresh
        assert loaded == ["src.public.a", "src.public.tm_sync"]
        record = _record(first)
        assert record.armed["src.public.a"].startswith(LOAD_PREFIX)
        assert record.offsets, "the lake holds the stream's offsets"

        # Again: the lake's offsets and record say everything is armed: nothing loaded.
        start, loaded = _run(first, state, url, 2, "DELETE FROM public.a WHERE id = 2")
        assert not start.fresh and not start.resnapshot and not start.reasons, start.reasons
        assert loaded == []

        # A table added: it alone is loaded; the others stream on.
        execute(url, "UPDATE public.a SET v = 'y' WHERE id = 3")  # while nothing runs
        added = config_for(
            url, tmp_path / "lake", ["public.a", "public.b", "public.tm_sync"], name=name
        )
        start, loaded = _run(added, state, url, 3, "UPDATE public.b SET v = 'z' WHERE id = 1")
        assert not start.fresh
        assert loaded == ["src.public.b"], start.reasons
        assert _record(added).armed["src.public.b"].startswith(LOAD_PREFIX)
    finally:
        drop_slot(url, f"tidemark_{name}_src")
    report = verify_source(added, added.sources[0], timeout=10)
    assert report.ok, [t for t in report.tables if not t.ok]
    live = {r["id"]: r["v"] for r in layer(tmp_path / "lake", "live", "src.public.a").to_pylist()}
    assert live == dict(fetch(url, "SELECT id, v FROM public.a"))
    changelog = layer(tmp_path / "lake", "changelog", "src.public.a").to_pylist()
    assert sum(r["_tm_op"] == "r" for r in changelog) == 3000, "loaded once, never again"
    updates = [r["id"] for r in changelog if r["_tm_op"] == "u"]
    assert sorted(updates) == [1, 3], json.dumps(updates)

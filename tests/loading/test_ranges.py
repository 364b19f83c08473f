"""Ranges by ctid, by key and by date load the same lake; keyless tables load whole.

The table has gaps (deleted rows), moved rows (updates after the first insert), NULL and
infinite dates: whichever way it is cut, every row lands once and `verify` finds the lake
equal to the source. The seeds' month partitions are ranges by date, one per month.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.loading.support import config_for, execute, layer, new_database
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.sinks.loads import LoadLog
from tidemark.startload import arm_sources
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres]

SALES = """
CREATE TABLE public.sales (id bigint PRIMARY KEY, sold_at date, amount numeric(12,2), note text);
INSERT INTO public.sales
  SELECT g, DATE '2025-01-01' + (g % 420), (g * 7 % 1000) / 10.0, 'sale ' || g
  FROM generate_series(1, 20000) g;
DELETE FROM public.sales WHERE id % 97 = 0;
UPDATE public.sales SET note = 'moved' WHERE id % 89 = 0;
UPDATE public.sales SET sold_at = NULL WHERE id = 5;
UPDATE public.sales SET sold_at = 'infinity' WHERE id = 6;
UPDATE public.sales SET sold_at = '-infinity' WHERE id = 7;
"""


def _load(url: str, tmp: Path, name: str, ranges, tables=("public.sales",)) -> tuple:
    config = config_for(
        url,
        tmp / name / "lake",
        list(tables),
        name=name,
        snapshot={"*": {"ranges": ranges, "rows_per_range": 2500, "max_workers": 3}},
    )
    try:
        arm_sources(config)
    finally:
        drop_slot(url, f"tidemark_{name}_src")
    report = verify_source(config, config.sources[0], timeout=5)
    assert report.ok, [t for t in report.tables if not t.ok]
    return config, LoadLog(config.lake, app_id=config.app_id).latest()


def test_ctid_key_and_date_ranges_give_the_same_lake(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    execute(url, SALES)
    lakes = {}
    for name, ranges in (
        ("byctid", "ctid"),
        ("bykey", "key"),
        ("bymonth", {"column": "sold_at", "by": "month"}),
    ):
        config, states = _load(url, tmp_path, name, ranges)
        state = states["src.public.sales"]
        assert state.status == "done"
        assert state.range_kind == {"byctid": "ctid", "bykey": "key", "bymonth": "column"}[name]
        assert len(state.ranges) > 1
        if name == "bymonth":
            assert len(state.ranges) == 14  # 2025-01 .. 2026-02: one range per month
        live = layer(Path(config.lake), "live", "src.public.sales")
        lakes[name] = live.select(["id", "sold_at", "amount", "note"]).sort_by("id")
    assert lakes["byctid"].num_rows == 20000 - 20000 // 97
    assert lakes["byctid"].equals(lakes["bykey"])
    assert lakes["byctid"].equals(lakes["bymonth"])


def test_a_table_without_a_key_but_replica_identity_full_loads(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    execute(
        url,
        "CREATE TABLE public.events (kind text, amount int, tags text[])",
        "ALTER TABLE public.events REPLICA IDENTITY FULL",
        "INSERT INTO public.events SELECT 'k' || (g % 50), g % 7, ARRAY['t' || (g % 3)]"
        " FROM generate_series(1, 5000) g",
        "INSERT INTO public.events VALUES (NULL, NULL, NULL), (NULL, NULL, NULL)",
    )
    config, states = _load(url, tmp_path, "keyless", "ctid", tables=("public.events",))
    assert len(states["src.public.events"].ranges) == 1  # identical rows are counted together
    live = layer(Path(config.lake), "live", "src.public.events")
    assert sum(live.column("_tm_count").to_pylist()) == 5002
    nulls = [r for r in live.to_pylist() if r["kind"] is None]
    assert [r["_tm_count"] for r in nulls] == [2]

"""Merge-on-read lookups of files not in the cache (`sinks/delta/dv/layer.py`,
`select.py`): only the wanted rows decoded, through DuckDB or, where it fails, the row
groups that hold them; either way the tables equal copy-on-write's."""

from __future__ import annotations

import pytest

from tests.support import crash_writer as cw
from tests.test_sinks_merge_on_read import MOR, logical, tables
from tidemark.sinks.delta.dv import layer
from tidemark.sinks.delta.dv.select import SelectFailed
from tidemark.sinks.lake import Lake


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The crash writer's workload written copy-on-write: what every lookup path must give."""
    lake = Lake(
        str(tmp_path_factory.mktemp("cow")), app_id="cow", write_modes={"*": "copy_on_write"}
    )
    cw.run(lake, cw.workload(8))
    yield {k: logical(v) for k, v in tables(lake).items()}
    lake.close()


@pytest.mark.parametrize("reader", ["duckdb", "row groups"])
def test_lookups_decode_only_wanted_rows_of_files_not_cached(
    lake_root, expected, monkeypatch, reader
):
    """No file fits the cache: lookups select the rows through DuckDB, or (where it
    fails) read the row groups that hold them; either way the tables come out exact."""
    selected = []
    original = layer.select_rows

    def select(wanted, schemas):
        if reader == "row groups":
            raise SelectFailed("refused by the test")
        found = original(wanted, schemas)  # a failure here would fall back unseen: count
        selected.append(len(found))
        return found

    monkeypatch.setattr(layer, "select_rows", select)
    monkeypatch.setattr(layer, "ROW_GROUP_ROWS", 500)  # several row groups per file
    lake = Lake(lake_root(), app_id="crash", write_modes=MOR, cache_bytes=1)
    cw.run(lake, cw.workload(8))
    assert {k: logical(v) for k, v in tables(lake).items()} == expected
    assert bool(selected) == (reader == "duckdb")

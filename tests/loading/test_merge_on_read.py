"""A table the parallel loader arms into a merge-on-read lake streams on with deletion
vectors: the rows the loader wrote in bulk files are found, marked deleted and versioned
like any other.

The loader writes plain files (no deletion vectors); the first streamed update or delete of
a loaded row must find it in those files (the key index is built from them) and delete it
with a DV, not leave a second open version or a row the source deleted.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.loading.support import Running, config_for, execute, fetch, new_database
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.kernel.names import path_segment
from tidemark.sinks.readers import has_deletion_vectors, read_table
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


def _read(lake: Path, name: str) -> list[dict]:
    dt = DeltaTable(str(lake / name / path_segment("src.public.items")))
    return read_table(dt).to_pylist()


def test_loaded_rows_are_updated_and_deleted_with_deletion_vectors(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    execute(
        url,
        "CREATE TABLE public.tm_sync (id int PRIMARY KEY)",
        "CREATE TABLE public.items (id int PRIMARY KEY, qty int, note text)",
        "INSERT INTO public.items SELECT g, g % 7, 'item ' || g FROM generate_series(1, 6000) g",
    )
    lake = tmp_path / "lake"
    config = config_for(
        url,
        lake,
        ["public.items", "public.tm_sync"],
        name="morload",
        write_mode={"*": "merge_on_read"},
        snapshot={"*": {"rows_per_range": 1500, "max_workers": 2}},
    )
    run = Running(config, tmp_path / "state")
    try:
        run.wait_streaming()
        execute(
            url,
            "UPDATE public.items SET qty = -1 WHERE id IN (1, 2500, 5999)",  # three ranges
            "DELETE FROM public.items WHERE id IN (3, 4000)",
            "UPDATE public.items SET note = 'twice' WHERE id = 1",
            "INSERT INTO public.items VALUES (7000, 1, 'new')",
        )
        run.wait_for(url, "tm_sync", 1)
    finally:
        run.stop()
        drop_slot(url, "tidemark_morload_src")
    report = verify_source(config, config.sources[0], timeout=10)
    assert report.ok, [t for t in report.tables if not t.ok]

    live_dt = DeltaTable(str(lake / "live" / path_segment("src.public.items")))
    assert has_deletion_vectors(live_dt), "live was written merge-on-read"
    live = {r["id"]: (r["qty"], r["note"]) for r in _read(lake, "live")}
    assert live == {i: (q, n) for i, q, n in fetch(url, "SELECT id, qty, note FROM public.items")}

    forensic = _read(lake, "forensic")
    versions = collections.Counter(r["id"] for r in forensic)
    open_versions = collections.Counter(r["id"] for r in forensic if r["_tm_current"])
    assert versions[1] == 3 and versions[2500] == 2 and versions[3] == 1 and versions[7000] == 1
    assert open_versions[3] == 0 and open_versions[4000] == 0, "deleted rows are closed"
    assert all(count == 1 for key, count in open_versions.items()), "one open version per key"
    assert len(open_versions) == 6000 - 2 + 1

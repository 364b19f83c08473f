"""The end-of-load check finds a lake that differs from the source, and reads the live
layer as the hand-over left it even after the stream has written on.

Start-up checks after the hand-over, on a thread beside the stream (the check of a 2M-row
table costs more than its load): the check must then read the version the hand-over
committed, not the newest. Here the lake is changed behind the check's back: a row deleted
(the row count differs), a value changed (the hash differs).
"""

from __future__ import annotations

import psycopg2
import pytest
from deltalake import DeltaTable

from tests.loading.support import config_for, execute, new_database
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.kernel.names import path_segment
from tidemark.loadcheck import check_loaded
from tidemark.startload import arm_sources

pytestmark = [pytest.mark.postgres]


def test_the_check_reads_the_handover_version_and_finds_rows_and_values_that_differ(
    postgres, tmp_path
):
    url = new_database(postgres.url, postgres.url_for)
    execute(
        url,
        "CREATE TABLE public.items (id int PRIMARY KEY, price numeric(10,2), name text)",
        "INSERT INTO public.items SELECT g, g * 1.5, 'item ' || g FROM generate_series(1, 3000) g",
    )
    config = config_for(url, tmp_path / "lake", ["public.items"], name="chk")
    try:
        arm_sources(config)
    finally:
        drop_slot(url, "tidemark_chk_src")
    live = DeltaTable(str(tmp_path / "lake" / "live" / path_segment("src.public.items")))
    handed_over = live.version()

    def check(version: int | None):
        conn = psycopg2.connect(url)
        try:
            return check_loaded(
                conn.cursor(),
                source_table="public.items",
                lake_table="src.public.items",
                root=config.lake,
                key_columns=("id",),
                version=version,
            )
        finally:
            conn.close()

    assert check(None).status == "OK"
    live.delete("id = 7")
    deleted = check(None)
    assert (deleted.status, deleted.source_rows, deleted.lake_rows) == (
        "ROW COUNT MISMATCH",
        3000,
        2999,
    )
    live.update({"name": "'renamed'"}, predicate="id = 8")
    assert check(None).status == "ROW COUNT MISMATCH"
    live.restore(handed_over)
    live.update({"name": "'renamed'"}, predicate="id = 8")
    assert check(None).status == "HASH MISMATCH"
    assert check(handed_over).status == "OK", "the hand-over's version, as it was"

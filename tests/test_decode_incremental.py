"""Positions of incremental-snapshot rows (a table snapshotted while streaming goes on).

Debezium reads such a table in chunks while streaming goes on (op `r`, snapshot
`incremental`): a row read must sort after every change streamed before its chunk (or the
core would drop the row as a replay, as it did when these rows carried no LSN and got
commit 0), and a change streamed after the chunk must sort after its row.
"""

from __future__ import annotations

import psycopg2
import pytest

from tests.fixtures.debezium import changes
from tidemark.connectors.decode import TYPE_SETTINGS, Decoder
from tidemark.connectors.postgres.capture import request_snapshot, signal_table_name

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


def run(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def test_incremental_snapshot_rows_sort_before_later_changes(
    fresh_database, capture_factory, tmp_path
):
    url = fresh_database()
    run(
        url,
        "CREATE TABLE public.old (id int PRIMARY KEY)",
        "INSERT INTO old SELECT generate_series(1, 5)",
        "CREATE TABLE public.added (id int PRIMARY KEY, v text)",
        "INSERT INTO added SELECT g, 'v' || g FROM generate_series(1, 30) g",
    )
    state = tmp_path / "state"
    first = capture_factory(
        url, ["public.old"], pipeline="grow", state=state, source="inc", extra=TYPE_SETTINGS
    )
    first.collect(lambda rs: len(changes(rs)) >= 5)
    decoder = Decoder("postgres")
    decoded_old = decoder.decode(first.records).changes["inc.public.old"].events
    first.engine.close()

    second = capture_factory(
        url,
        ["public.old", "public.added"],
        pipeline="grow",
        state=state,
        source="inc",
        extra=TYPE_SETTINGS,
    )
    run(url, "INSERT INTO old VALUES (6)", "UPDATE added SET v = 'before' WHERE id = 2")
    second.collect(lambda rs: len(changes(rs, "added")) >= 1, timeout=90)
    request_snapshot(url, signal_table_name("grow", "inc"), ["public.added"])
    second.collect(lambda rs: len(changes(rs, "added")) >= 31, timeout=90)
    run(url, "UPDATE added SET v = 'after' WHERE id IN (1, 30)", "INSERT INTO old VALUES (7)")
    second.collect(
        lambda rs: len(changes(rs, "added")) >= 33 and len(changes(rs, "old")) >= 2, timeout=90
    )
    batch = decoder.decode(second.records)
    added = batch.changes["inc.public.added"].events
    rows = added.to_pylist()
    snapshot = {r["id"]: r["_tm_position"] for r in rows if r["_tm_op"] == "r"}
    before, *after = [r for r in rows if r["_tm_op"] == "u"]
    updates = {r["id"]: r["_tm_position"] for r in after}
    assert sorted(snapshot) == list(range(1, 31)) and sorted(updates) == [1, 30]
    assert all(updates[k] > snapshot[k] for k in updates)
    assert before["id"] == 2 and before["_tm_position"] < snapshot[2]
    old = batch.changes["inc.public.old"].events.column("_tm_position").to_pylist()
    assert min(old) > decoded_old.column("_tm_position").to_pylist()[-1]
    positions = added.column("_tm_position").to_pylist()
    assert len(set(positions)) == len(positions)

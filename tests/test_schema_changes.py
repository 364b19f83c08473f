"""Stories: schema changes, truncates and partitions reach the lake exactly (issue 14).

One pipeline (embedded runtime, real Debezium, Tidemark's DDL capture installed with
`tidemark setup`'s statements) captures one table per story while the simulator writes to its
own tables. Each story changes its table at the source, then checks `verify` and forensic as
of instants taken between commits just before and just after the change, against what the
source held at those instants. The stories share the pipeline and run in file order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.fixtures.postgres import PostgresHandle
from tests.support.schema_stage import SIMULATED, Stage, differences
from tidemark.kernel import columns as c
from tidemark.observe.report import Observer
from tidemark.source_setup import install

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

CASES = {
    "public.s_add": "CREATE TABLE s_add (id int PRIMARY KEY, v text)",
    "public.s_ren": "CREATE TABLE s_ren (id int PRIMARY KEY, v text, w int)",
    "public.s_wide": (
        "CREATE TABLE s_wide (id int PRIMARY KEY, q int, amt numeric(10,2), s varchar(10), "
        "ts timestamp)"
    ),
    "public.s_trunc": "CREATE TABLE s_trunc (id int PRIMARY KEY, v text)",
    "public.s_drop": "CREATE TABLE s_drop (id int PRIMARY KEY, v text)",
    "public.s_misc": "CREATE TABLE s_misc (id int PRIMARY KEY, v text, w int, q int)",
    "public.s_part": (
        "CREATE TABLE s_part (id int, region text, v text, PRIMARY KEY (id, region)) "
        "PARTITION BY LIST (region); "
        "CREATE TABLE s_part_eu PARTITION OF s_part FOR VALUES IN ('eu'); "
        "CREATE TABLE s_part_us PARTITION OF s_part FOR VALUES IN ('us'); "
        "CREATE TABLE s_part_ap PARTITION OF s_part FOR VALUES IN ('ap')"
    ),
}
SEED = {
    "public.s_add": "INSERT INTO s_add SELECT g, 'v' || g FROM generate_series(1, 20) g",
    "public.s_ren": "INSERT INTO s_ren SELECT g, 'v' || g, g FROM generate_series(1, 20) g",
    "public.s_wide": (
        "INSERT INTO s_wide SELECT g, g, g * 1.25, 's' || g, "
        "'2024-03-31 00:30'::timestamp + g * interval '1 hour' FROM generate_series(1, 20) g"
    ),
    "public.s_trunc": "INSERT INTO s_trunc SELECT g, 'v' || g FROM generate_series(1, 20) g",
    "public.s_drop": "INSERT INTO s_drop SELECT g, 'v' || g FROM generate_series(1, 20) g",
    "public.s_misc": "INSERT INTO s_misc SELECT g, 'v' || g, g, g FROM generate_series(1, 20) g",
    "public.s_part": (
        "INSERT INTO s_part SELECT g, (ARRAY['eu', 'us', 'ap'])[1 + g % 3], 'v' || g "
        "FROM generate_series(1, 30) g"
    ),
}
PART_KEY = ("id", "region")


@pytest.fixture(
    scope="module",
    params=["copy_on_write", pytest.param("merge_on_read", marks=pytest.mark.slow)],
)
def stage(
    request: pytest.FixtureRequest,
    postgres: PostgresHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    root: Path = tmp_path_factory.mktemp("schema")
    database = f"schema_{int(time.time() * 1000) % 10**9}"
    conn = psycopg2.connect(postgres.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    conn.close()
    stage = Stage(
        postgres.url_for(database),
        root / "lake",
        root / "state",
        [*CASES, *SIMULATED],
        write_mode=request.param,
    )
    stage.sql(*CASES.values(), *SEED.values())
    stage.start_simulator()
    install(stage.config())  # what `tidemark setup --yes` applies
    stage.start()
    try:
        stage.wait_streaming()
        for table in CASES:  # the initial snapshot has landed
            check = stage.verify(table)
            assert check.ok, check
        yield stage
    finally:
        stage.close()


def _clean(stage: Stage, table: str) -> None:
    check = stage.verify(table)
    assert check.ok, check
    assert stage.dead_letters(table) == []


def test_add_column_with_a_default_fills_every_row_at_the_ddl(stage):
    before, rows_before = stage.instant(), stage.rows("s_add")
    stage.sql(
        "ALTER TABLE s_add ADD COLUMN c2 text DEFAULT 'dflt', "
        "ADD COLUMN n numeric(8,2) DEFAULT 1.50"
    )
    after, rows_after = stage.instant(), stage.rows("s_add")
    # A volatile default: the table is rewritten and every row gets its own value.
    stage.sql("ALTER TABLE s_add ADD COLUMN at timestamptz DEFAULT clock_timestamp()")
    volatile, rows_volatile = stage.instant(), stage.rows("s_add")
    assert len({r["at"] for r in rows_volatile.values()}) > 1
    stage.sql(
        "INSERT INTO s_add (id, v) VALUES (21, 'v21')",
        "UPDATE s_add SET c2 = 'changed' WHERE id = 1",
    )
    later, rows_later = stage.instant(), stage.rows("s_add")
    _clean(stage, "public.s_add")
    assert differences(rows_before, stage.as_of("s_add", before)) == []
    assert differences(rows_after, stage.as_of("s_add", after)) == []
    assert differences(rows_volatile, stage.as_of("s_add", volatile)) == []
    assert differences(rows_later, stage.as_of("s_add", later)) == []
    live = {r["id"]: r for r in stage.layer("live", "s_add").to_pylist()}
    assert {r["c2"] for i, r in live.items() if i != 1} == {"dflt"}


def test_rename_keeps_the_data_under_the_new_name(stage):
    before, rows_before = stage.instant(), stage.rows("s_ren")
    stage.sql("ALTER TABLE s_ren RENAME COLUMN v TO v2")
    after, rows_after = stage.instant(), stage.rows("s_ren")
    stage.sql("UPDATE s_ren SET v2 = 'renamed', w = -1 WHERE id <= 3")
    later, rows_later = stage.instant(), stage.rows("s_ren")
    _clean(stage, "public.s_ren")
    assert differences(rows_before, stage.as_of("s_ren", before), renamed={"v": "v2"}) == []
    assert differences(rows_after, stage.as_of("s_ren", after)) == []
    assert differences(rows_later, stage.as_of("s_ren", later)) == []
    for layer in ("changelog", "live", "forensic"):
        names = stage.layer(layer, "s_ren").column_names
        assert "v2" in names and "v" not in names, (layer, names)


def test_widening_type_changes_widen_the_lake_without_dead_letters(stage):
    before, rows_before = stage.instant(), stage.rows("s_wide")
    # Postgres reads naive timestamps in the session's zone: the lake must do the same.
    stage.sql(
        "SET TimeZone = 'Europe/Paris'; ALTER TABLE s_wide ALTER COLUMN q TYPE bigint, "
        "ALTER COLUMN amt TYPE numeric(12,4), ALTER COLUMN s TYPE text, "
        "ALTER COLUMN ts TYPE timestamptz"
    )
    after, rows_after = stage.instant(), stage.rows("s_wide")
    # USING rewrites the values even where the type stays: the new ones are sent along.
    stage.sql("ALTER TABLE s_wide ALTER COLUMN q TYPE bigint USING q * 10")
    rewritten, rows_rewritten = stage.instant(), stage.rows("s_wide")
    stage.sql(
        "UPDATE s_wide SET q = 5000000000, amt = 12345678.1234, s = repeat('x', 40) WHERE id = 2"
    )
    later, rows_later = stage.instant(), stage.rows("s_wide")
    _clean(stage, "public.s_wide")
    as_before = stage.as_of("s_wide", before)
    assert (
        differences(
            {k: {n: v for n, v in r.items() if n != "ts"} for k, r in rows_before.items()},
            as_before,
        )
        == []
    )
    assert differences(rows_after, stage.as_of("s_wide", after)) == []
    assert differences(rows_rewritten, stage.as_of("s_wide", rewritten)) == []
    assert differences(rows_later, stage.as_of("s_wide", later)) == []
    schema = stage.layer("forensic", "s_wide").schema
    assert str(schema.field("q").type) == "int64"
    assert str(schema.field("amt").type) == "decimal128(12, 4)"
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"


def test_truncate_empties_live_and_closes_history_at_its_commit(stage):
    before, rows_before = stage.instant(), stage.rows("s_trunc")
    stage.sql("TRUNCATE s_trunc")
    after = stage.instant()
    stage.sql("INSERT INTO s_trunc VALUES (1, 'again'), (100, 'new')")
    later, rows_later = stage.instant(), stage.rows("s_trunc")
    _clean(stage, "public.s_trunc")
    assert differences(rows_before, stage.as_of("s_trunc", before)) == []
    assert stage.as_of("s_trunc", after) == {}
    assert differences(rows_later, stage.as_of("s_trunc", later)) == []
    ops = stage.layer("changelog", "s_trunc").column(c.OP).to_pylist()
    assert ops.count("t") == 1


def test_drop_and_create_starts_a_new_generation(stage):
    before, rows_before = stage.instant(), stage.rows("s_drop")
    stage.sql("DROP TABLE s_drop")
    gone = stage.instant()
    stage.sql(
        "CREATE TABLE s_drop (id bigint PRIMARY KEY, v text, extra int)",
        "INSERT INTO s_drop VALUES (1, 'reborn', 1), (50, 'new', 2)",
    )
    later, rows_later = stage.instant(), stage.rows("s_drop")
    _clean(stage, "public.s_drop")
    assert differences(rows_before, stage.as_of("s_drop", before)) == []
    assert stage.as_of("s_drop", gone) == {}
    assert differences(rows_later, stage.as_of("s_drop", later)) == []
    forensic = stage.layer("forensic", "s_drop").to_pylist()
    assert {r[c.GENERATION] for r in forensic if r["extra"] is not None} == {2}
    assert {r[c.GENERATION] for r in forensic if r["extra"] is None} == {1}
    assert stage.layer("changelog", "s_drop").column(c.OP).to_pylist().count("x") == 1
    observer = Observer(stage.config(["public.s_drop"]), probe_sources=False)
    try:
        table = observer.report().table("src.public.s_drop")
    finally:
        observer.close()
    assert table is not None and table.generation == 2
    assert (table.schema_change or "").startswith("create_table")


def test_partitioned_table_streams_through_its_parent(stage):
    key = PART_KEY
    stage.sql(
        "INSERT INTO s_part VALUES (100, 'eu', 'new'), (101, 'us', 'new')",
        "UPDATE s_part SET v = 'changed' WHERE id IN (1, 2)",
        "UPDATE s_part SET region = 'ap' WHERE id = 3",  # moves partitions: a new key
        "DELETE FROM s_part WHERE id = 4",
    )
    moved, rows_moved = stage.instant(), stage.rows("s_part", key)
    stage.sql("ALTER TABLE s_part DETACH PARTITION s_part_us")
    detached, rows_detached = stage.instant(), stage.rows("s_part", key)
    stage.sql("INSERT INTO s_part_us VALUES (500, 'us', 'while detached')")
    _clean(stage, "public.s_part")
    assert differences(rows_moved, stage.as_of("s_part", moved, key)) == []
    assert differences(rows_detached, stage.as_of("s_part", detached, key)) == []
    # Attached rows arrive by an incremental snapshot: as of once it has run, not the ATTACH.
    stage.sql("ALTER TABLE s_part ATTACH PARTITION s_part_us FOR VALUES IN ('us')")
    _wait_for(lambda: len(stage.rows("s_part", key)) == len(stage.layer("live", "s_part")))
    _clean(stage, "public.s_part")
    stage.sql("DROP TABLE s_part_ap")
    dropped, rows_dropped = stage.instant(), stage.rows("s_part", key)
    stage.sql("TRUNCATE s_part_eu")  # Postgres does not publish it: the trigger does
    emptied, rows_emptied = stage.instant(), stage.rows("s_part", key)
    _clean(stage, "public.s_part")
    assert differences(rows_dropped, stage.as_of("s_part", dropped, key)) == []
    assert differences(rows_emptied, stage.as_of("s_part", emptied, key)) == []
    assert {k[1] for k in rows_emptied} == {"us"}
    assert "s_part_eu" not in {p.name.split(".")[-1] for p in (stage.lake / "live").iterdir()}


def test_add_column_without_default_and_drop_column_keep_nulls(stage):
    before, rows_before = stage.instant(), stage.rows("s_misc")
    stage.sql("ALTER TABLE s_misc ADD COLUMN c int", "ALTER TABLE s_misc DROP COLUMN w")
    after, rows_after = stage.instant(), stage.rows("s_misc")
    stage.sql("UPDATE s_misc SET c = 7, v = 'after' WHERE id = 1")
    later, rows_later = stage.instant(), stage.rows("s_misc")
    _clean(stage, "public.s_misc")
    assert differences(rows_before, stage.as_of("s_misc", before)) == []
    assert differences(rows_after, stage.as_of("s_misc", after)) == []
    assert differences(rows_later, stage.as_of("s_misc", later)) == []
    live = {r["id"]: r for r in stage.layer("live", "s_misc").to_pylist()}
    assert live[1]["w"] is None and live[2]["w"] == 2  # dropped: NULL from then on


def test_int_to_text_is_refused_with_a_reason_naming_the_ddl(stage):
    stage.sql(
        "ALTER TABLE s_misc ALTER COLUMN q TYPE text", "UPDATE s_misc SET q = 'x' WHERE id = 3"
    )
    _wait_for(lambda: stage.dead_letters("s_misc"))
    letters = stage.dead_letters("s_misc")
    assert len(letters) == 1
    assert "ALTER TABLE s_misc ALTER COLUMN q TYPE text" in letters[0]["reason"]
    assert "does not widen" in letters[0]["reason"]
    check = stage.verify("public.s_misc")
    assert not check.ok and check.differences["differing"] == 1  # id 3: the refused update


def test_drop_and_create_while_the_pipeline_is_stopped(stage):
    """Last: it restarts the shared pipeline."""
    stage.halt()
    stage.sql(
        "DROP TABLE s_trunc",
        "CREATE TABLE s_trunc (id int PRIMARY KEY, v text, w text)",
        "INSERT INTO s_trunc VALUES (7, 'restarted', 'w')",
    )
    rows = stage.rows("s_trunc")
    stage.start()
    stage.wait_streaming()
    _clean(stage, "public.s_trunc")
    assert differences(rows, stage.as_of("s_trunc", stage.instant())) == []
    forensic = stage.layer("forensic", "s_trunc").to_pylist()
    assert {r[c.GENERATION] for r in forensic if r["w"] is not None} == {2}


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)

"""What the start-up checks say about each table shape, against a real Postgres.

A table is either captured exactly or refused before Debezium starts, with one line that
says why and what to do: generated columns (pgoutput before Postgres 18 sends them as
NULL), arrays declared with more than one dimension, no key at all. REPLICA IDENTITY USING
INDEX is captured, keyed by the index; REPLICA IDENTITY FULL without a primary key is
captured with every row image as its identity. Names with spaces work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import yaml

from tidemark.connectors.errors import SourceConfigError
from tidemark.connectors.postgres.setup import prepare_source, table_shapes

pytestmark = pytest.mark.postgres

DDL = """
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Order Items" ("Item No" int PRIMARY KEY, qty int);
CREATE TABLE public.by_index (code text NOT NULL, region int NOT NULL, v text);
CREATE UNIQUE INDEX by_index_ux ON public.by_index (region, code);
ALTER TABLE public.by_index REPLICA IDENTITY USING INDEX by_index_ux;
CREATE TABLE public.full_no_key (a int, b text);
ALTER TABLE public.full_no_key REPLICA IDENTITY FULL;
CREATE TABLE public.pk_full (id int PRIMARY KEY, v text);
ALTER TABLE public.pk_full REPLICA IDENTITY FULL;
CREATE TABLE public.no_key (a int, b text);
CREATE TABLE public.nothing (id int PRIMARY KEY);
ALTER TABLE public.nothing REPLICA IDENTITY NOTHING;
CREATE TABLE public.generated (id int PRIMARY KEY, price int,
                               doubled int GENERATED ALWAYS AS (price * 2) STORED);
CREATE TABLE public.grid (id int PRIMARY KEY, cells int[][]);
"""


@pytest.fixture(scope="module")
def url(postgres) -> str:
    conn = psycopg2.connect(postgres.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE DATABASE "source_checks"')
    conn.close()
    url = postgres.url_for("source_checks")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(DDL)
    return url


def test_keys_follow_the_replica_identity(url: str) -> None:
    shapes = table_shapes(
        url, ['"Sales"."Order Items"', "public.by_index", "public.full_no_key", "public.pk_full"]
    )
    assert shapes['"Sales"."Order Items"'].key == ("Item No",)
    assert shapes["public.by_index"].key == ("region", "code")  # the index, in its order
    assert shapes["public.full_no_key"].key == ()  # every row image is its identity
    assert shapes["public.pk_full"].key == ("id",)


@pytest.mark.parametrize(
    ("table", "says", "hint"),
    [
        ("public.no_key", "has no primary key", "REPLICA IDENTITY FULL"),
        ("public.nothing", "replica identity NOTHING", "REPLICA IDENTITY FULL"),
        ("public.generated", "generated column(s) `doubled`", "Postgres 18"),
        ("public.grid", "multi-dimensional array column(s) `cells`", "one-dimensional"),
        ("public.missing", "does not exist", '"Sales"."Order Items"'),
    ],
)
def test_a_table_that_cannot_be_captured_exactly_is_refused(url, table, says, hint) -> None:
    with pytest.raises(SourceConfigError) as caught:
        prepare_source(url, tables=[table], slot="s_checks", publication="p_checks")
    assert says in caught.value.message
    assert hint in (caught.value.hint or "")


def test_run_refuses_a_generated_column_in_one_line(url: str, tmp_path: Path) -> None:
    """`tidemark run` stops before Debezium starts: exit 2, one line, no traceback."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "checks",
                "lake": str(tmp_path / "lake"),
                "sources": [
                    {"name": "src", "kind": "postgres", "dsn": url, "tables": ["public.generated"]}
                ],
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "tidemark", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TIDEMARK_STATE": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert "generated column(s) `doubled`" in done.stderr
    assert "Traceback" not in done.stderr

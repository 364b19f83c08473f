"""`tidemark query`: DuckDB views over real Delta tables, the as-of macro, output formats."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.pipeline.handmade_lake import T0, build, story
from tidemark.kernel.errors import UsageError
from tidemark.query import connect, discover, run_query
from tidemark.render import format_result

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    build(tmp_path / "lake", "shop.public.customers", story())
    build(tmp_path / "lake", "shop.public.orders", story()[:2])
    return tmp_path / "lake"


def test_discover_lists_every_table_and_layer(lake: Path) -> None:
    found = {(t.schema, t.name) for t in discover(str(lake))}
    assert found == {
        (layer, name)
        for layer in ("changelog", "live", "forensic")
        for name in ("shop.public.customers", "shop.public.orders")
    }


def test_views_by_full_and_short_name(lake: Path) -> None:
    con = connect(str(lake))
    full = run_query(con, 'SELECT id, name FROM live."shop.public.customers" ORDER BY id')
    short = run_query(con, "SELECT id, name FROM live.customers ORDER BY id")
    assert (
        full.to_pylist()
        == short.to_pylist()
        == [
            {"id": 1, "name": "ádá ☃"},
            {"id": 3, "name": "cy"},
        ]
    )
    assert run_query(con, "SELECT count(*) AS n FROM changelog.customers").to_pylist() == [{"n": 7}]
    assert run_query(con, "SELECT count(*) AS n FROM forensic.customers").to_pylist() == [{"n": 5}]


def test_as_of_gives_the_state_at_an_instant(lake: Path) -> None:
    con = connect(str(lake))

    def at(seconds: float) -> list[tuple]:
        ts = (T0 + timedelta(seconds=seconds)).isoformat()
        result = run_query(
            con, f"SELECT id, name, balance FROM as_of('customers', '{ts}') ORDER BY id"
        )
        return [(r["id"], r["name"], str(r["balance"])) for r in result.to_pylist()]

    assert at(-1) == []
    assert at(0) == [(1, "ada", "10.00"), (2, "bob", "10.00")]
    assert at(2.5) == [(1, "ada", "20.00"), (2, "bob", "10.00"), (3, "cy", "0.50")]
    assert at(3) == [(1, "ada", "20.00"), (3, "cy", "0.50")]
    assert at(99) == [(1, "ádá ☃", "-3.10"), (3, "cy", "0.50")]
    full = run_query(con, f"SELECT count(*) n FROM as_of('shop.public.customers', '{T0}')")
    assert full.to_pylist() == [{"n": 2}]


def test_bad_sql_is_a_usage_error_with_a_hint(lake: Path) -> None:
    with pytest.raises(UsageError, match="query failed") as info:
        run_query(connect(str(lake)), "SELECT * FROM live.nope")
    assert "as_of" in (info.value.hint or "")


def test_empty_lake_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no Delta tables"):
        connect(str(tmp_path))


def test_formats(lake: Path) -> None:
    result = run_query(
        connect(str(lake)), "SELECT id, balance, opened, name FROM live.customers ORDER BY id"
    )
    lines = format_result(result, "json").splitlines()
    assert json.loads(lines[0]) == {
        "id": 1,
        "balance": "-3.10",
        "opened": "2025-12-31T12:00:00+00:00",
        "name": "ádá ☃",
    }
    assert format_result(result, "csv").splitlines()[0] == "id,balance,opened,name"
    assert "ádá ☃" in format_result(result, "table")


def test_cli_query_json(lake: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidemark",
            "query",
            "--lake",
            str(lake),
            "--format",
            "json",
            "SELECT count(*) AS n FROM live.orders",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == {"n": 2}

"""Every adversarial table through one real pipeline run: nothing stops it, the lake is exact.

Issue 13 item 5. The shared run (tests/values/harness.py) snapshots, streams inserts, then
updates and deletes them in later batches, restarts, and changes more; each test then reads
one table's verdict: the pipeline never failed, `verify` finds no difference and no broken
invariant, the values that cannot be stored are dead letters (and nothing else is), and a
few values read straight from the live table are what docs/decoding.md says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.values.cases import CASES, Case
from tests.values.harness import Outcome, lake_table, run_cases

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


@pytest.fixture(scope="module")
def outcome(postgres, tmp_path_factory) -> Outcome:
    import psycopg2

    conn = psycopg2.connect(postgres.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('CREATE DATABASE "adversarial"')
    conn.close()
    return run_cases(postgres.url_for("adversarial"), tmp_path_factory.mktemp("values"))


def test_the_pipeline_never_stopped(outcome: Outcome) -> None:
    assert outcome.errors == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_table_round_trips(outcome: Outcome, case: Case) -> None:
    check = outcome.check(case)
    assert check.ok, check
    assert check.source_rows == check.lake_rows or case.key is None, check
    dead = outcome.dead_for(case)
    assert len(dead) == case.dead, [d["reason"] for d in dead]
    assert all(d["reason"] and d["raw_value"] for d in dead)
    if case.expect:
        _spot_check(outcome.lake, case)


def _spot_check(lake: Path | None, case: Case) -> None:
    assert lake is not None
    live = DeltaTable(str(lake / "live" / lake_table(case))).to_pyarrow_table()
    rows = {r[case.key[0]]: r for r in live.to_pylist()} if case.key else {}
    for key, values in case.expect.items():
        for column, value in values.items():
            assert rows[key][column] == value, (key, column, rows[key][column])


def test_commands_name_a_table_with_a_space(outcome: Outcome, tmp_path: Path) -> None:
    """`"Sales"."Order Items"` through status, query and verify (run and tail are the run
    above and tests/test_tail_cli.py): its lake folder is escaped, its view name is not."""
    import json

    import yaml
    from click.testing import CliRunner

    from tidemark.cli import cli

    assert outcome.lake is not None
    assert (outcome.lake / "live" / "src.Sales.Order~20Items" / "_delta_log").is_dir()
    config = tmp_path / "pipeline.yaml"
    document = outcome.config.model_dump(mode="json")
    document["sources"][0]["tables"] = ['"Sales"."Order Items"']  # as a user would write it
    config.write_text(yaml.safe_dump(document))
    runner = CliRunner()
    status = runner.invoke(cli, ["status", "--config", str(config), "--json"])
    assert status.exit_code == 0, status.output
    assert "src.Sales.Order Items" in status.output
    query = runner.invoke(
        cli,
        [
            "query",
            "--config",
            str(config),
            "--format",
            "json",
            'SELECT "Item No", "Qty" FROM live."src.Sales.Order Items" ORDER BY 1',
        ],
    )
    assert query.exit_code == 0, query.output
    rows = [json.loads(line) for line in query.output.splitlines() if line.startswith("{")]
    assert rows == [{"Item No": 1, "Qty": 9}, {"Item No": 3, "Qty": 4}]
    verify = runner.invoke(cli, ["verify", "--config", str(config)])
    assert verify.exit_code == 0, verify.output

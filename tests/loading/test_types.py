"""The parallel loader's lake is the lake Debezium's snapshot gives, column by column.

Every adversarial table (tests/values/cases.py: every type, key shape and odd value the
guarantees issue names) is snapshotted twice from one database: by Debezium through the
production pipeline (`snapshot: {loader: debezium}`), and by the parallel loader (`COPY` into
Arrow, bulk files). Each layer's source columns must be equal, type and value; the values
that cannot be stored are dead letters on both sides.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tests.loading.support import Running, config_for, execute, exists, layer, new_database
from tests.values import harness
from tests.values.cases import CASES, Case
from tidemark.kernel.columns import COUNT, OP, ROW, VALID_TO, is_metadata

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

KEPT = (ROW, COUNT, OP)


@pytest.fixture(scope="module")
def lakes(postgres, tmp_path_factory) -> tuple[Path, Path]:
    url = new_database(postgres.url, postgres.url_for)
    harness._create(url, CASES)
    execute(
        url,
        "CREATE TABLE public.unstorable (id int PRIMARY KEY, n numeric(10,2), d date, t text)",
        "INSERT INTO public.unstorable VALUES (1, 'NaN', '2024-01-01', 'nan'),"
        " (2, 1.5, '10000-01-01', 'year 10000'), (3, 2.5, '2024-01-02', 'fine'),"
        " (4, 3.5, '0100-06-15 BC', 'bc')",
    )
    tables = [
        f"public.{harness.SYNC}",
        "public.unstorable",
        *(harness.config_table(c) for c in CASES),
    ]
    root = tmp_path_factory.mktemp("types")
    debezium = config_for(
        url, root / "debezium", tables, snapshot={"*": {"loader": "debezium"}}, name="dbz"
    )
    run = Running(debezium, root / "state-dbz")
    try:
        run.wait_streaming()  # Debezium streams once its snapshot was delivered
        run.wait_for(url, harness.SYNC, 1)
    finally:
        run.stop()
    ours = config_for(url, root / "loader", tables, name="loader")
    run = Running(ours, root / "state-loader")
    run.stop()  # the loads happen before the runner starts
    return root / "debezium", root / "loader"


def _same(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal values (NaN equal to NaN, also inside lists and structs)."""
    return repr(a.to_pylist()) == repr(b.to_pylist())


def _compare(theirs: pa.Table, ours: pa.Table, keys: list[str], what: str) -> list[str]:
    columns = [c for c in theirs.column_names if not is_metadata(c) or c in KEPT]
    problems = []
    if set(columns) - set(ours.column_names):
        return [f"{what}: columns missing {sorted(set(columns) - set(ours.column_names))}"]
    theirs = theirs.sort_by([(k, "ascending") for k in keys])
    ours = ours.sort_by([(k, "ascending") for k in keys])
    for name in columns:
        a, b = theirs.column(name), ours.column(name)
        if a.type != b.type:
            problems.append(f"{what}.{name}: type {b.type}, Debezium's {a.type}")
        elif not _same(a, b):
            problems.append(f"{what}.{name}: {b.to_pylist()[:3]} vs {a.to_pylist()[:3]}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_layer_equals_debeziums_snapshot(lakes, case: Case) -> None:
    debezium, loader = lakes
    table = harness.lake_table(case)
    keys = list(case.key or [ROW])
    if not case.snapshot:
        assert not exists(loader, "live", table) or layer(loader, "live", table).num_rows == 0
        return
    problems = []
    for name in ("live", "changelog", "forensic"):
        theirs, ours = layer(debezium, name, table), layer(loader, name, table)
        if name == "forensic":  # the open versions (a keyless table's counting steps differ)
            theirs = theirs.filter(pa.compute.is_null(theirs.column(VALID_TO)))
            ours = ours.filter(pa.compute.is_null(ours.column(VALID_TO)))
        assert theirs.num_rows == ours.num_rows, (name, theirs.num_rows, ours.num_rows)
        problems += _compare(theirs, ours, keys, name)
    assert not problems, problems


def test_values_the_lake_cannot_hold_are_dead_letters_on_both_sides(lakes) -> None:
    """A numeric NaN in numeric(10,2) and a date past 9999 are dead letters, the rest loads.
    (A BC date: Debezium's snapshot reads it without its era, a wrong AD date, as
    docs/decoding.md says; the loader reads it exactly, so it is a dead letter there.)"""
    debezium, loader = lakes
    table = "src.public.unstorable"
    assert layer(debezium, "live", table).column("id").to_pylist() == [3, 4]
    assert layer(loader, "live", table).column("id").to_pylist() == [3]
    theirs = [
        r for r in layer(debezium, "_tidemark", "dead_letters").to_pylist() if r["table"] == table
    ]
    ours = [
        r for r in layer(loader, "_tidemark", "dead_letters").to_pylist() if r["table"] == table
    ]
    assert len(theirs) == 2 and len(ours) == 3
    reasons = " ".join(r["reason"] for r in ours)
    assert "NaN" in reasons and "10000-01-01" in reasons and "BC" in reasons
    assert all(r["raw_value"] for r in ours)

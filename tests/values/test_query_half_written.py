"""`tidemark query` on a lake whose table is half-written: the rest is queried, no traceback.

A table folder whose first commit is not there yet (a `_delta_log` folder and nothing in it)
or was cut off mid-write made `query` print a delta-rs traceback; now that table is left out
with a warning, and a lake with nothing readable is a one-line usage error (exit 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from tidemark.kernel.errors import UsageError
from tidemark.query import connect, run_query

ROOT = Path(__file__).resolve().parents[2]


def _half_written(lake: Path) -> None:
    (lake / "live" / "src.public.empty" / "_delta_log").mkdir(parents=True)
    cut = lake / "live" / "src.public.cut" / "_delta_log"
    cut.mkdir(parents=True)
    (cut / "00000000000000000000.json").write_text('{"commitInfo":')


def test_a_half_written_table_is_left_out(tmp_path: Path, caplog) -> None:
    lake = tmp_path / "lake"
    write_deltalake(str(lake / "live" / "src.Sales.Order~20Items"), pa.table({"id": [1, 2]}))
    _half_written(lake)
    con = connect(str(lake))
    got = run_query(con, 'SELECT count(*) AS n FROM live."src.Sales.Order Items"')
    assert got.column("n").to_pylist() == [2]
    assert "not readable yet" in caplog.text


def test_nothing_readable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _half_written(lake)
    with pytest.raises(UsageError, match="no readable Delta tables"):
        connect(str(lake))
    done = subprocess.run(
        [sys.executable, "-m", "tidemark", "query", "--lake", str(lake), "SELECT 1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "no readable Delta tables" in done.stderr

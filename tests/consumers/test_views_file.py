"""`tidemark views`: the DuckDB file of consumer views over a hand-built lake.

Reconciling after schema changes, masking, the macros, and what happens to views whose
table is gone. Real Delta tables (deltalake), real DuckDB with the delta extension.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.pipeline.handmade_lake import T0, build, story
from tidemark.config import parse_config
from tidemark.kernel.errors import UsageError
from tidemark.sinks.views.duck import load_delta
from tidemark.views import masking_for, write_views

ROOT = Path(__file__).resolve().parents[2]


def _config(lake: Path, **extra):
    return parse_config(
        {
            "pipeline": "demo",
            "lake": str(lake),
            "sources": [
                {
                    "name": "shop",
                    "kind": "postgres",
                    "dsn": "postgresql://u:p@localhost:1/db",
                    "tables": ["public.customers", "public.orders"],
                }
            ],
            **extra,
        }
    )


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    build(tmp_path / "lake", "shop.public.customers", story())
    build(tmp_path / "lake", "shop.public.orders", story()[:2])
    return tmp_path / "lake"


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path), read_only=True)
    load_delta(con)
    con.execute("SET TimeZone = 'UTC'")
    return con


def test_views_macros_and_names(lake: Path, tmp_path: Path) -> None:
    path = tmp_path / "consumer.duckdb"
    report = write_views(_config(lake), path)
    assert {(v.schema, v.name) for v in report.views} >= {
        ("live", "shop.public.customers"),
        ("live", "customers"),
        ("forensic", "orders"),
        ("changelog", "customers"),
    }
    con = _open(path)
    assert con.sql("SELECT id, name FROM live.customers ORDER BY id").fetchall() == [
        (1, "ádá ☃"),
        (3, "cy"),
    ]
    at = (T0 + timedelta(seconds=2.5)).isoformat()
    assert con.sql(f"SELECT id FROM as_of('customers', '{at}') ORDER BY id").fetchall() == [
        (1,),
        (2,),
        (3,),
    ]
    window = con.sql(
        f"SELECT _tm_op, id FROM changes_between('customers', '{T0.isoformat()}', '{at}')"
    ).fetchall()
    assert window == [("c", 3), ("u", 1)]  # after t1, up to t2, in source order
    columns = [r[0] for r in con.sql("DESCRIBE live.customers").fetchall()]
    assert "_tm_bucket" not in columns and "_tm_position" in columns


def test_rerun_after_a_schema_change_reconciles(lake: Path, tmp_path: Path) -> None:
    path = tmp_path / "consumer.duckdb"
    write_views(_config(lake), path)
    table = lake / "live" / "shop.public.orders"
    extra = pa.table(
        {
            "id": pa.array([9], pa.int64()),
            "name": ["new"],
            "_tm_op": ["c"],
            "_tm_position": ["f" * 40],
            "_tm_batch": pa.array([2], pa.int64()),
            "vip": [True],
        }
    )
    write_deltalake(str(table), extra, mode="append", schema_mode="merge")
    con = _open(path)  # the old file still answers: its views list their columns
    assert con.sql("SELECT count(*) FROM live.orders").fetchone() == (3,)
    assert "vip" not in [r[0] for r in con.sql("DESCRIBE live.orders").fetchall()]
    con.close()
    write_views(_config(lake), path)
    con = _open(path)
    assert con.sql("SELECT id, vip FROM live.orders WHERE id = 9").fetchall() == [(9, True)]
    con.close()
    # The table is created again without `name`: the view keeps the column, as NULL.
    current = pa.table({"id": pa.array([5], pa.int64()), "_tm_op": ["c"]})
    write_deltalake(str(table), current, mode="overwrite", schema_mode="overwrite")
    report = write_views(_config(lake), path)
    assert {c for v in report.views for c in v.kept_as_null if v.name == "orders"} >= {"name"}
    con = _open(path)
    assert con.sql("SELECT id, name FROM live.orders").fetchall() == [(5, None)]


def test_views_of_a_table_gone_from_the_lake_are_dropped(lake: Path, tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "consumer.duckdb"
    write_views(_config(lake), path)
    for layer in ("changelog", "live", "forensic"):
        shutil.rmtree(lake / layer / "shop.public.orders")
    report = write_views(_config(lake), path)
    assert "live.orders" in report.dropped and "live.shop.public.orders" in report.dropped
    con = _open(path)
    names = {
        r[0] for r in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }
    assert "orders" not in names and "customers" in names


def test_classified_columns_are_hashed_or_dropped(lake: Path, tmp_path: Path) -> None:
    config = _config(
        lake,
        classify={"public.customers": {"name": "pii", "active": "internal"}},
        tags={"internal": {"mask": "drop"}},
    )
    path = tmp_path / "consumer.duckdb"
    write_views(config, path)
    con = _open(path)
    columns = [r[0] for r in con.sql("DESCRIBE forensic.customers").fetchall()]
    assert "active" not in columns and "name" in columns
    masking = masking_for(config)
    names = {r[0] for r in con.sql("SELECT name FROM forensic.customers").fetchall()}
    assert names == {masking.hashes(n) for n in ("ada", "bob", "cy", "ádá ☃")}
    assert (lake / "_tidemark" / "masking.key").stat().st_mode & 0o777 == 0o600
    # The raw layer keeps the clear value (no `raw: drop`).
    raw = DeltaTable(str(lake / "live" / "shop.public.customers")).to_pyarrow_table()
    assert "cy" in raw.column("name").to_pylist()
    assert config.excluded_columns(config.sources[0]) is None


def test_raw_drop_becomes_debeziums_column_exclude_list(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        classify={"public.customers": {"name": "secret", "email": "pii"}},
        tags={"secret": {"mask": "drop", "raw": "drop"}},
    )
    assert config.excluded_columns(config.sources[0]) == r"public\.customers\.name"


def test_cli_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(
        "pipeline: demo\nlake: " + str(tmp_path / "empty") + "\nsources:\n"
        "  - {name: shop, kind: postgres, dsn: 'postgresql://u:p@h:1/d', tables: [public.t]}\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidemark",
            "views",
            "--config",
            str(config),
            "--duckdb",
            str(tmp_path / "v.duckdb"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines()[0].startswith("error: no Delta tables under")
    assert "Traceback" not in out.stderr


def test_classify_names_a_captured_table(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"classify names `public\.nope`"):
        _config(tmp_path, classify={"public.nope": {"x": "pii"}})


def test_query_and_views_on_an_s3_lake(s3_lake, tmp_path: Path) -> None:
    """An object-store lake: query gets a temporary S3 secret from the storage options; the
    views file names s3:// paths and holds no credentials."""
    root, options = s3_lake()
    rows = pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["ada", "bob"]})
    write_deltalake(f"{root}/live/shop.public.customers", rows, storage_options=options)
    from tidemark.query import connect, run_query

    con = connect(root, storage_options=options)
    assert run_query(con, "SELECT count(*) AS n FROM live.customers").to_pylist() == [{"n": 2}]
    config = _config(Path("unused")).model_copy(update={"lake": root, "storage_options": options})
    path = tmp_path / "s3.duckdb"
    write_views(config, path)
    reader = _open(path)
    from tidemark.sinks.views.duck import s3_secret

    s3_secret(reader, options)
    assert reader.sql("SELECT name FROM live.customers ORDER BY id").fetchall() == [
        ("ada",),
        ("bob",),
    ]
    definitions = " ".join(
        r[0] for r in reader.sql("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
    )
    assert f"{root}/live/shop.public.customers" in definitions
    assert options["AWS_SECRET_ACCESS_KEY"] not in definitions

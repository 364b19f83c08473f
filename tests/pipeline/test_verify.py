"""`tidemark verify` against a real Postgres and hand-built Delta lakes.

The lake is written with deltalake directly (tests/pipeline/handmade_lake.py), so these
tests pin the comparison and the invariants independently of the sinks.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from tests.pipeline.handmade_lake import T0, Change, build, pos, row, story
from tidemark.config import parse_config
from tidemark.connectors.postgres.snapshot import consistent_snapshot
from tidemark.verify import check_table, verify_source

pytestmark = pytest.mark.postgres

DDL = """CREATE TABLE public.customers (id bigint PRIMARY KEY, name text,
         balance numeric(12,2), opened timestamptz, active boolean)"""


def _source(url: str, changes: list[Change]) -> None:
    """Apply the story's final state to the source table."""
    state: dict[int, dict] = {}
    for c in changes:
        if c.op == "d":
            state.pop(c.row["id"], None)
        else:
            state[c.row["id"]] = c.row
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(DDL)
        for r in state.values():
            cur.execute(
                "INSERT INTO public.customers VALUES (%(id)s, %(name)s, %(balance)s, %(opened)s,"
                " %(active)s)",
                r,
            )


def _config(url: str, lake: Path):
    return parse_config(
        {
            "pipeline": "t",
            "lake": str(lake),
            "sources": [
                {"name": "shop", "kind": "postgres", "dsn": url, "tables": ["public.customers"]}
            ],
        }
    )


def _verify(url: str, lake: Path):
    config = _config(url, lake)
    return verify_source(config, config.sources[0], timeout=5)


def test_story_matches(fresh_database, tmp_path: Path) -> None:
    url = fresh_database()
    _source(url, story())
    build(tmp_path / "lake", "shop.public.customers", story())
    report = _verify(url, tmp_path / "lake")
    (check,) = report.tables
    assert (check.source_rows, check.lake_rows) == (2, 2)
    assert check.ok, check
    assert report.ok


def test_reports_missing_unexpected_and_differing_keys(fresh_database, tmp_path: Path) -> None:
    url = fresh_database()
    _source(url, story())
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("UPDATE public.customers SET balance = 20.001 WHERE id = 3")  # rounds to 20.00
        cur.execute("INSERT INTO public.customers (id, name) VALUES (7, NULL)")
        cur.execute("DELETE FROM public.customers WHERE id = 1")
    build(tmp_path / "lake", "shop.public.customers", story())
    (check,) = _verify(url, tmp_path / "lake").tables
    assert not check.ok
    assert check.differences == {"missing": 1, "unexpected": 1, "differing": 1}
    assert check.examples == {"missing": [("7",)], "unexpected": [("1",)], "differing": [("3",)]}


def test_a_change_committed_after_the_snapshot_is_not_seen(fresh_database, tmp_path) -> None:
    """The source side is read in the snapshot, not at whatever is committed later."""
    url = fresh_database()
    _source(url, story())
    build(tmp_path / "lake", "shop.public.customers", story())
    with consistent_snapshot(url) as snapshot:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("UPDATE public.customers SET name = 'zed' WHERE id = 3")
        check = check_table(
            snapshot,
            source_table="public.customers",
            lake_table="shop.public.customers",
            root=str(tmp_path / "lake"),
            storage_options={},
            app_id="t",
        )
    assert check.ok, check
    assert not _verify(url, tmp_path / "lake").ok


def test_lake_state_is_taken_at_the_snapshot_position(fresh_database, tmp_path: Path) -> None:
    """Events of transactions the snapshot cannot see (a future xid) are not compared."""
    url = fresh_database()
    _source(url, story())
    future = Change("u", row(3, "later"), pos(0x7FFF_FFFF), datetime.now(UTC), tx="4000000000")
    build(tmp_path / "lake", "shop.public.customers", [*story(), future])
    assert _verify(url, tmp_path / "lake").ok


def test_invariants_catch_two_open_versions_and_duplicates(fresh_database, tmp_path) -> None:
    url = fresh_database()
    _source(url, story())
    lake = tmp_path / "lake"
    build(lake, "shop.public.customers", story())
    forensic = str(lake / "forensic" / "shop.public.customers")
    changelog = str(lake / "changelog" / "shop.public.customers")
    from deltalake import DeltaTable

    open_rows = (
        DeltaTable(forensic)
        .to_pyarrow_table()
        .filter(pa.compute.is_null(pa.compute.field("_tm_valid_to")))
    )
    write_deltalake(forensic, open_rows.slice(0, 1), mode="append")
    write_deltalake(changelog, DeltaTable(changelog).to_pyarrow_table().slice(0, 1), mode="append")
    (check,) = _verify(url, lake).tables
    text = " | ".join(check.findings)
    assert "more than one open version" in text
    assert "overlapping" in text
    assert "more than once" in text
    assert not check.ok


def test_a_source_change_stored_twice_under_two_positions_is_found(
    fresh_database, tmp_path
) -> None:
    """A replayed create whose position came out higher (its commit part differs) is the same
    source change: same LSN, new commit part. Live still matches; verify must not."""
    url = fresh_database()
    _source(url, story())
    changes = story()
    first = Change("c", changes[2].row, pos(0x200, 0x1F0), changes[2].ts)
    again = Change("c", changes[2].row, pos(0x250, 0x1F0), changes[2].ts)
    build(tmp_path / "lake", "shop.public.customers", [*changes[:2], first, again, *changes[3:]])
    (check,) = _verify(url, tmp_path / "lake").tables
    assert not check.ok
    assert any("twice, under different positions" in f for f in check.findings), check.findings


TYPES_DDL = """CREATE TABLE public.kinds (
    id int PRIMARY KEY, n numeric, n2 numeric(10,3), f float8, r real, b boolean,
    ts timestamptz, tsn timestamp, d date, t time, u uuid, j jsonb, by bytea, c char(5),
    v varchar(20), tx text, arr int[])"""
TYPES_ROWS = [
    (
        1,
        Decimal("1.500"),
        Decimal("2.000"),
        0.1,
        1.5,
        True,
        datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 10, 0, 0, 1),
        date(1969, 12, 31),
        time(23, 59, 59, 999999),
        "6f1c4a3e-0000-4000-8000-000000000001",
        '{"b": 1, "a": [1, 2]}',
        b"\x00\xffab",
        "ab",
        "x|y",
        "ünï ☃ \n 'q' \"dq\"",
        [1, None, 3],
    ),
    (
        2,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        "",
        None,
    ),
]


def test_canonical_text_agrees_across_types(fresh_database, tmp_path: Path) -> None:
    """Values read from Postgres, typed as the decoder types them, hash the same in DuckDB."""
    url = fresh_database()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(TYPES_DDL)
        for r in TYPES_ROWS:
            cur.execute(f"INSERT INTO public.kinds VALUES ({', '.join(['%s'] * len(r))})", r)
        cur.execute("SELECT j::text FROM public.kinds WHERE id = 1")
        jsonb_text = cur.fetchone()[0]
    schema = pa.schema(
        [
            ("id", pa.int32()),
            ("n", pa.string()),
            ("n2", pa.decimal128(10, 3)),
            ("f", pa.float64()),
            ("r", pa.float32()),
            ("b", pa.bool_()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("tsn", pa.timestamp("us")),
            ("d", pa.date32()),
            ("t", pa.int64()),
            ("u", pa.string()),
            ("j", pa.string()),
            ("by", pa.binary()),
            ("c", pa.string()),
            ("v", pa.string()),
            ("tx", pa.string()),
            ("arr", pa.list_(pa.int32())),
            ("_tm_op", pa.string()),
            ("_tm_position", pa.string()),
        ]
    )
    rows = []
    for r in TYPES_ROWS:
        values = list(r)
        values[1] = None if r[1] is None else str(r[1])  # variable numeric as text
        values[9] = (
            None
            if r[9] is None
            else (
                ((r[9].hour * 60 + r[9].minute) * 60 + r[9].second) * 1_000_000 + r[9].microsecond
            )
        )  # Delta has no time type: micros since midnight, as Debezium's MicroTime
        values[11] = jsonb_text if r[11] else None
        values[13] = None if r[13] is None else r[13].ljust(5)  # char(5) comes padded
        rows.append(dict(zip(schema.names, [*values, "r", pos(1)], strict=True)))
    write_deltalake(
        str(tmp_path / "lake" / "live" / "src.public.kinds"),
        pa.Table.from_pylist(rows, schema=schema),
    )
    with consistent_snapshot(url) as snapshot:
        check = check_table(
            snapshot,
            source_table="public.kinds",
            lake_table="src.public.kinds",
            root=str(tmp_path / "lake"),
            storage_options={},
            app_id="t",
        )
    assert check.source_rows == check.lake_rows == 2
    assert check.ok, check


# -- the replay guard's invariants, each seen by the command (exit 1) ---------------------


def _verify_cli(url: str, lake: Path, tmp_path: Path) -> tuple[int, str]:
    """`tidemark verify --config ...` in-process: (exit code, its output)."""
    import yaml
    from click.testing import CliRunner

    from tidemark.cli import cli

    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "t",
                "lake": str(lake),
                "sources": [
                    {
                        "name": "shop",
                        "kind": "postgres",
                        "dsn": url,
                        "tables": ["public.customers"],
                    }
                ],
            }
        )
    )
    result = CliRunner().invoke(cli, ["verify", "--config", str(config), "--timeout", "5"])
    return result.exit_code, result.output


def _append(lake: Path, layer: str, rows: pa.Table) -> None:
    from deltalake import DeltaTable

    path = str(lake / layer / "shop.public.customers")
    write_deltalake(path, rows.cast(pa.schema(DeltaTable(path).schema().to_arrow())), mode="append")


def _layer(lake: Path, layer: str) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(str(lake / layer / "shop.public.customers")).to_pyarrow_table()


def test_a_key_with_two_versions_at_one_position_is_found(fresh_database, tmp_path) -> None:
    """The same event applied twice (zero-length intervals overlap nothing, so only this
    check sees it)."""
    url = fresh_database()
    _source(url, story())
    lake = tmp_path / "lake"
    build(lake, "shop.public.customers", story())
    closed = _layer(lake, "forensic").filter(pa.compute.field("_tm_valid_to").is_valid())
    first = closed.slice(0, 1)
    again = first.set_column(
        first.schema.get_field_index("_tm_valid_to"),
        "_tm_valid_to",
        first.column("_tm_valid_from"),
    )
    _append(lake, "forensic", again)
    code, out = _verify_cli(url, lake, tmp_path)
    assert code == 1, out
    assert "two versions at one source position" in out


def test_changelog_events_are_unique_by_key_and_position(fresh_database, tmp_path) -> None:
    """Two keys may share a position (snapshot counters restart in a distributed worker);
    one key's event twice is a double."""
    url = fresh_database()
    _source(url, story())
    lake = tmp_path / "lake"
    changes = story()
    # keys 1 and 2 were both inserted at one position: not a double
    shared = [Change("c", changes[0].row, pos(0x100), changes[0].ts), *changes[1:]]
    shared[1] = Change("c", changes[1].row, pos(0x100), changes[1].ts)
    build(lake, "shop.public.customers", shared)
    code, out = _verify_cli(url, lake, tmp_path)
    assert code == 0, out
    _append(lake, "changelog", _layer(lake, "changelog").slice(0, 1))
    code, out = _verify_cli(url, lake, tmp_path)
    assert code == 1, out
    assert "more than once" in out


def test_overlapping_forensic_intervals_are_found(fresh_database, tmp_path) -> None:
    """The Kafka Connect redelivery: a deleted key's events applied again under their own
    positions left a repeated version whose interval overlaps the others."""
    url = fresh_database()
    _source(url, story())
    lake = tmp_path / "lake"
    build(lake, "shop.public.customers", story())
    deleted = _layer(lake, "forensic").filter(pa.compute.field("id") == 2)
    again = deleted.set_column(
        deleted.schema.get_field_index("_tm_position"),
        "_tm_position",
        pa.array([pos(0x450)], pa.string()),
    )
    _append(lake, "forensic", again)
    code, out = _verify_cli(url, lake, tmp_path)
    assert code == 1, out
    assert "overlapping" in out


def test_a_snapshot_row_read_twice_is_found(fresh_database, tmp_path) -> None:
    """A snapshot redone after a crash landed its rows again under new positions: the same
    rows, so live and forensic look right; only the changelog shows it."""
    url = fresh_database()
    _source(url, story())
    lake = tmp_path / "lake"
    changes = story()
    snapshot = [
        Change("r", c.row, f"{0x50:016x}{0:016x}{i:08x}", T0) for i, c in enumerate(changes[:3])
    ]
    redone = [
        Change("r", c.row, f"{0x60:016x}{0:016x}{i:08x}", T0) for i, c in enumerate(changes[:3])
    ]
    build(lake, "shop.public.customers", [*snapshot, *changes[3:]])
    assert _verify_cli(url, lake, tmp_path)[0] == 0
    build(lake, "shop.public.customers", [*snapshot, *redone, *changes[3:]])
    code, out = _verify_cli(url, lake, tmp_path)
    assert code == 1, out
    assert "snapshot row(s) that repeat their key's previous version" in out

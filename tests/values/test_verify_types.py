"""`verify` on values whose lake form differs from Postgres's text: equal means equal.

verify reported false differences for inet, bit, varbit, point, numeric arrays and float
specials whose lake values were right, and crashed on ±infinity and on an empty table. The
lake here is written by hand in the form the decoder gives each type (docs/decoding.md), so
the comparison is pinned independently of the pipeline; one changed value must still be
found.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from tidemark.connectors.decode.storable import INTERVAL_STRUCT
from tidemark.connectors.postgres.snapshot import consistent_snapshot
from tidemark.verify import check_table

pytestmark = pytest.mark.postgres

DDL = """CREATE TABLE public.odd (
    id int PRIMARY KEY, ip inet, b1 bit(1), b3 bit(3), vb varbit, p point, an numeric(6,2)[],
    af float8[], f4 real, f8 float8, ts timestamp, tz timestamptz, d date, iv interval,
    ttz timetz, m money, nv numeric)"""
ROWS = """INSERT INTO public.odd VALUES
 (1, '192.168.0.1', B'1', B'011', B'0101', '(1.5,-2)', '{1.10,NULL}', '{NaN,Infinity,0.1}',
  'NaN', '-Infinity', 'infinity', '-infinity', 'infinity', '1 mon -2 days 00:00:00.5',
  '10:00:00.5+02', '-1.50', 'NaN'),
 (2, '::1/128', B'0', B'000', B'', '(1e300,0)', '{}', '{-0}', 1.17549435e-38, 1e16,
  '-infinity', 'infinity', '-infinity', '-178000000 years', '00:00:00+00', 0, '12.500')"""
POINT = pa.struct([("x", pa.float64()), ("y", pa.float64())])
SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("ip", pa.string()),
        ("b1", pa.bool_()),
        ("b3", pa.large_binary()),
        ("vb", pa.large_binary()),
        ("p", POINT),
        ("an", pa.list_(pa.decimal128(6, 2))),
        ("af", pa.list_(pa.float64())),
        ("f4", pa.float32()),
        ("f8", pa.float64()),
        ("ts", pa.timestamp("us")),
        ("tz", pa.timestamp("us", tz="UTC")),
        ("d", pa.date32()),
        ("iv", INTERVAL_STRUCT),
        ("ttz", pa.string()),
        ("m", pa.decimal128(38, 2)),
        ("nv", pa.string()),
        ("_tm_op", pa.string()),
        ("_tm_position", pa.string()),
    ]
)
END, START = datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(1, 1, 1)


def _lake_rows() -> list[dict]:
    """The two rows as the decoder stores them (infinities as the range ends, bits as
    Debezium's little-endian bit set, timetz in UTC, bare numeric as its exact text)."""
    return [
        {
            "id": 1,
            "ip": "192.168.0.1",
            "b1": True,
            "b3": b"\x03",
            "vb": b"\x05",
            "p": {"x": 1.5, "y": -2.0},
            "an": [Decimal("1.10"), None],
            "af": [float("nan"), float("inf"), 0.1],
            "f4": float("nan"),
            "f8": float("-inf"),
            "ts": END,
            "tz": START.replace(tzinfo=UTC),
            "d": date(9999, 12, 31),
            "iv": {"months": 1, "days": -2, "nanoseconds": 500_000_000},
            "ttz": "08:00:00.500000",
            "m": Decimal("-1.50"),
            "nv": "NaN",
        },
        {
            "id": 2,
            "ip": "::1",
            "b1": False,
            "b3": b"",
            "vb": b"",
            "p": {"x": 1e300, "y": 0.0},
            "an": [],
            "af": [-0.0],
            "f4": 1.17549435e-38,
            "f8": 1e16,
            "ts": START,
            "tz": END.replace(tzinfo=UTC),
            "d": date(1, 1, 1),
            "iv": {"months": -2_136_000_000, "days": 0, "nanoseconds": 0},
            "ttz": "00:00:00.000000",
            "m": Decimal("0.00"),
            "nv": "12.500",
        },
    ]


def _check(url: str, lake: Path, rows: list[dict]):
    table = pa.Table.from_pylist(
        [{**r, "_tm_op": "r", "_tm_position": f"{i:040x}"} for i, r in enumerate(rows)],
        schema=SCHEMA,
    )
    write_deltalake(str(lake / "live" / "src.public.odd"), table, mode="overwrite")
    with consistent_snapshot(url) as snapshot:
        return check_table(
            snapshot,
            source_table="public.odd",
            lake_table="src.public.odd",
            root=str(lake),
            storage_options={},
            app_id="t",
        )


def test_values_in_their_lake_form_compare_equal(fresh_database, tmp_path: Path) -> None:
    url = fresh_database()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(DDL)
        cur.execute(ROWS)
    check = _check(url, tmp_path / "lake", _lake_rows())
    assert (check.source_rows, check.lake_rows) == (2, 2)
    assert check.ok, check
    changed = _lake_rows()
    changed[1]["af"] = [0.1]  # one element of one array differs
    assert _check(url, tmp_path / "lake", changed).differences["differing"] == 1


def test_an_emptied_table_compares_without_error(fresh_database, tmp_path: Path) -> None:
    url = fresh_database()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(DDL)
    check = _check(url, tmp_path / "lake", [])
    assert check.ok and check.source_rows == check.lake_rows == 0, check

"""The Delta target: types a Delta table cannot hold, converted without losing values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from tidemark.connectors.decode.storable import INTERVAL_STRUCT, delta_storable


def test_every_unstorable_type_is_converted_and_written(tmp_path):
    times = pa.array([86_400_000_000, 1, None], pa.int64()).cast(pa.time64("us"))
    table = pa.table(
        {
            "t": times,
            "tn": pa.array([86_399_999_999_900, 0, None], pa.int64()).cast(pa.time64("ns")),
            "iv": pa.array([(-14, 3, -5), None, (0, 0, 1)], pa.month_day_nano_interval()),
            "du": pa.array([1, -2, None], pa.duration("us")),
            "big": pa.array(
                [Decimal("1.10"), None, Decimal("-0.00000000000000000001")], pa.decimal256(50, 20)
            ),
            "ns": pa.array([1_704_164_645_123_456_700, None, 0], pa.int64()).cast(
                pa.timestamp("ns")
            ),
            "d": pa.array([2**31 - 1, -(2**31), 0], pa.int32()).cast(pa.date32()),
            "lt": pa.array([[1, None], None, []], pa.list_(pa.int64())).cast(
                pa.list_(pa.time64("us"))
            ),
            "st": pa.StructArray.from_arrays(
                [times], names=["when"], mask=pa.array([False, True, False])
            ),
        }
    )
    out = delta_storable(table)
    assert out.schema.field("iv").type == INTERVAL_STRUCT
    rows = out.to_pylist()
    assert [r["t"] for r in rows] == ["24:00:00.000000", "00:00:00.000001", None]
    assert rows[0]["tn"] == "23:59:59.999999900"
    assert rows[0]["iv"] == {"months": -14, "days": 3, "nanoseconds": -5} and rows[1]["iv"] is None
    assert [r["du"] for r in rows] == [1, -2, None]
    assert rows[2]["big"] == "-0.00000000000000000001"
    assert rows[0]["big"] == "1.10000000000000000000"
    assert rows[0]["ns"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert [r["d"] for r in rows] == [dt.date(9999, 12, 31), dt.date(1, 1, 1), dt.date(1970, 1, 1)]
    assert rows[0]["lt"] == ["00:00:00.000001", None] and rows[1]["lt"] is None
    assert rows[0]["st"] == {"when": "24:00:00.000000"} and rows[1]["st"] is None
    write_deltalake(str(tmp_path / "t"), out)
    assert DeltaTable(str(tmp_path / "t")).to_pyarrow_table().to_pylist() == rows


def test_storable_tables_pass_through_untouched():
    table = pa.table({"a": [1, 2], "s": ["x", None]})
    assert delta_storable(table) is table

"""The decoder on the values Debezium sends for odd Postgres values (no services needed).

The numbers are the ones seen on real events (docs/decoding.md): each infinity has its own
encoding per path, a timestamp beyond int64 microseconds arrives wrapped around, numerics
arrive as text with their precision and scale beside them, unknown types as the bytes of
their text, and arrays as their elements' text (`tidemark.PgArrayText`). Nothing may become
another value: an infinity is the sentinel, anything else outside the range is a dead letter.
"""

from __future__ import annotations

import base64
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from tidemark.connectors.decode import Decoder
from tidemark.connectors.decode.pgtext import interval
from tidemark.connectors.decode.rowkey import row_digests
from tidemark.connectors.decode.storable import delta_storable
from tidemark.connectors.decode.types import column_type
from tidemark.kernel.records import RawRecord

TYPES = {
    "date": {"type": "int32", "name": "io.debezium.time.Date"},
    "micro": {"type": "int64", "name": "io.debezium.time.MicroTimestamp"},
    "milli": {"type": "int64", "name": "io.debezium.time.Timestamp"},
    "zoned": {"type": "string", "name": "io.debezium.time.ZonedTimestamp"},
}


def _convert(kind: str, values: list) -> list:
    column = column_type({**TYPES[kind], "optional": True})
    return column.convert(values).cast(pa.int64() if kind != "date" else pa.int32()).to_pylist()


def test_every_infinity_encoding_becomes_the_extreme() -> None:
    top, bottom = 2**31 - 1, -(2**31)
    # streaming, snapshot, and the snapshot's value a day off (the JVM's time zone)
    assert _convert("date", [-2147472692, -2147472691, -622191234, -625821272, -622191233]) == [
        top,
        bottom,
        top,
        bottom,
        top,
    ]
    assert _convert("micro", [9223372036825200000, -9223372036832400000, 0]) == [
        2**63 - 1,
        -(2**63) + 1,
        0,
    ]
    assert _convert("milli", [9223372036825200, -9223372036832400, 1]) == [
        2**63 - 1,
        -(2**63) + 1,
        1000,
    ]
    assert _convert("zoned", ["infinity", "-infinity", None]) == [2**63 - 1, -(2**63) + 1, None]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("micro", -9223372036853775810),  # year 294276, wrapped around by Debezium
        ("milli", -9223372036853775),  # the same at millisecond precision
        ("date", -3_000_000),  # before 4714-11-24 BC and no known encoding
        ("zoned", "+294276-12-31T23:59:59.999999Z"),
        ("zoned", "-0099-06-15T12:00:00.000000Z"),
    ],
)
def test_a_value_outside_postgres_range_raises(kind, value) -> None:
    with pytest.raises((ValueError, pa.ArrowInvalid)):
        _convert(kind, [value])


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        (pa.array([2_932_897], pa.int32()).cast(pa.date32()), "10000-01-01", "2932897 days"),
        (pa.array([-755_522], pa.int32()).cast(pa.date32()), "0100-06-15 BC", "-755522 days"),
        (
            pa.array([-62_167_219_200_000_000]).cast(pa.timestamp("us")),
            "0001-01-01 BC",
            "-62167219200000000 µs",
        ),
    ],
)
def test_delta_cannot_hold_years_beyond_9999_or_before_1(column, value, says) -> None:
    with pytest.raises(ValueError, match=f"column `d`: `{value}` \\({says}"):
        delta_storable(pa.table({"d": column}))


def test_infinities_become_the_delta_sentinels() -> None:
    dates = pa.array([2**31 - 1, -(2**31), 0], pa.int32()).cast(pa.date32())
    stamps = pa.array([2**63 - 1, -(2**63) + 1, 0]).cast(pa.timestamp("us", tz="UTC"))
    stored = delta_storable(pa.table({"d": dates, "t": stamps}))
    assert stored.column("d").cast(pa.int32()).to_pylist() == [2_932_896, -719_162, 0]
    assert stored.column("t").cast(pa.int64()).to_pylist() == [
        253_402_300_799_999_999,
        -62_135_596_800_000_000,
        0,
    ]


def _numeric(length: int, scale: int, source: str = "NUMERIC") -> object:
    params = {
        "__debezium.source.column.type": source,
        "__debezium.source.column.length": str(length),
        "__debezium.source.column.scale": str(scale),
    }
    return column_type({"type": "string", "optional": True, "parameters": params})


def test_numerics_arrive_as_text_and_stay_exact() -> None:
    fixed = _numeric(10, 2)
    assert fixed.arrow == pa.decimal128(10, 2)
    assert fixed.convert(["99999999.99", None, "-0.01"]).to_pylist() == [
        Decimal("99999999.99"),
        None,
        Decimal("-0.01"),
    ]
    with pytest.raises(ValueError, match="numeric `NaN` has no value in numeric"):
        fixed.convert(["NAN"])
    bare = _numeric(131089, 0)
    assert bare.convert(
        ["12.500", "NAN", "POSITIVE_INFINITY", "NEGATIVE_INFINITY"]
    ).to_pylist() == [
        "12.500",
        "NaN",
        "Infinity",
        "-Infinity",
    ]
    assert _numeric(50, 20).arrow == pa.decimal256(50, 20)
    assert _numeric(100, 2).arrow == pa.string()
    assert _numeric(2147483647, 0, "MONEY").convert(["-92233720368547758.08"]).to_pylist() == [
        Decimal("-92233720368547758.08")
    ]


def test_unknown_types_are_their_text_and_bytea_stays_bytes() -> None:
    composite = column_type(
        {"type": "bytes", "optional": True, "parameters": {"__debezium.source.column.type": "PAIR"}}
    )
    text = base64.b64encode(b'(1,"a b")').decode()
    assert composite.convert([text, None]).to_pylist() == ['(1,"a b")', None]
    bytea = column_type(
        {
            "type": "bytes",
            "optional": True,
            "parameters": {"__debezium.source.column.type": "BYTEA"},
        }
    )
    assert bytea.convert([base64.b64encode(b"\xff").decode()]).to_pylist() == [b"\xff"]


def _text_array(element: str, **params: str) -> object:
    return column_type(
        {
            "type": "array",
            "items": {"type": "string", "optional": True},
            "optional": True,
            "name": "tidemark.PgArrayText",
            "parameters": {"tidemark.element": element, **params},
        }
    )


def test_arrays_sent_as_text_are_typed_again() -> None:
    ints = _text_array("int4").convert([["1", None, "-3"], [], None]).to_pylist()
    assert ints == [[1, None, -3], [], None]
    iv = _text_array("interval").convert([["-1 years -2 mons +3 days -04:05:06.789"]])
    assert iv.to_pylist()[0][0].months == -14
    times = _text_array("timetz").convert([["10:00:00.123456+02", "00:00:01+14"]])
    assert times.cast(pa.list_(pa.int64())).to_pylist() == [[28_800_123_456, 36_001_000_000]]
    stamps = _text_array("timestamptz").convert([["2024-01-01 10:00:00+02", "infinity"]])
    assert stamps.cast(pa.list_(pa.int64())).to_pylist() == [[1_704_096_000_000_000, 2**63 - 1]]
    dates = _text_array("date").convert([["2024-02-29", "0100-06-15 BC", "-infinity"]])
    assert dates.cast(pa.list_(pa.int32())).to_pylist() == [[19_782, -755_522, -(2**31)]]
    money = _text_array("money", **{"tidemark.length": "2147483647"})
    assert money.convert([["$1,234.50", "-$0.01"]]).to_pylist() == [
        [Decimal("1234.50"), Decimal("-0.01")]
    ]
    numeric = _text_array("numeric", **{"tidemark.length": "6", "tidemark.scale": "2"})
    with pytest.raises(ValueError, match="NaN"):
        numeric.convert([["NaN"]])
    with pytest.raises(ValueError, match="more than one dimension"):
        _text_array("int4").convert([["__tidemark_multidimensional__:{{1,2},{3,4}}"]])
    assert _text_array("mood").convert([["sad", None]]).to_pylist() == [["sad", None]]
    assert interval("00:00:00.5") == (0, 0, 500_000_000)


def test_identical_rows_share_a_digest_and_a_null_column_changes_nothing() -> None:
    rows = pa.table({"a": [1, 1, 2], "b": ["x", "x", None], "c": [[1.5], [1.5], None]})
    digests = row_digests(rows, ["a", "b", "c"]).to_pylist()
    assert digests[0] == digests[1] != digests[2]
    wider = rows.append_column("d", pa.nulls(3, pa.string()))  # a column added later
    assert row_digests(wider, ["a", "b", "c", "d"]).to_pylist() == digests


def _envelope(after: dict, fields: list[dict]) -> RawRecord:
    schema = {
        "type": "struct",
        "fields": [
            {"type": "struct", "fields": fields, "optional": True, "field": "before"},
            {"type": "struct", "fields": fields, "optional": True, "field": "after"},
            {"type": "struct", "fields": [], "field": "source"},
            {"type": "string", "field": "op"},
        ],
    }
    payload = {
        "before": None,
        "after": after,
        "op": "c",
        "source": {
            "name": "src",
            "schema": "public",
            "table": "t",
            "lsn": 16,
            "txId": 7,
            "sequence": '["8","16"]',
            "ts_us": 1,
        },
    }
    return RawRecord(
        "src.public.t",
        orjson.dumps({"id": after["id"]}).decode(),
        orjson.dumps(payload).decode(),
        key_schema=orjson.dumps({"fields": [{"field": "id", "type": "int32"}]}).decode(),
        value_schema=orjson.dumps(schema).decode(),
    )


def test_one_bad_value_is_a_dead_letter_and_the_rest_goes_on() -> None:
    fields = [{"type": "int32", "field": "id"}, {**TYPES["date"], "optional": True, "field": "d"}]
    records = [
        _envelope({"id": 1, "d": 19_000}, fields),
        _envelope({"id": 2, "d": 2_932_897}, fields),  # 10000-01-01: Delta cannot hold it
        _envelope({"id": 3, "d": -622_191_234}, fields),  # +infinity, from the snapshot
    ]
    batch = Decoder("postgres").decode(records)
    assert batch.changes["src.public.t"].events.column("id").to_pylist() == [1, 3]
    (letter,) = batch.dead_letters
    assert "column `d`: `10000-01-01`" in letter.reason and letter.raw_value

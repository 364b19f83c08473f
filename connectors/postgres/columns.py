"""How each column of a Postgres table is read by `COPY` and typed as the decoder types it.

The parallel loader (`connectors/postgres/loader.py`) reads tables with `COPY (SELECT ...)
TO STDOUT (FORMAT csv)` instead of through Debezium, and the lake must not be able to tell
the difference: every column gets exactly the Arrow type (and value) the decoder gives the
same column of a Debezium snapshot (docs/decoding.md, "Type mapping"), as the Delta-storable
form the pipeline writes (`connectors/decode/storable.py`). This module decides, per column,
the SQL expression that `COPY` sends (text in a form that parses exactly: numerics as their
text, money as numeric, arrays as a JSON array of their elements' texts, hstore as JSON) and
the function that turns the CSV column into the typed Arrow array.

The session that reads must use `DateStyle = ISO`, `TimeZone = UTC`, `IntervalStyle =
postgres`, `extra_float_digits = 1` and `bytea_output = hex` (`SESSION_SETTINGS`): the
parsers below rely on them.

A value that cannot be typed (a numeric NaN in `numeric(p, s)`, a date Delta cannot hold, an
array of two dimensions) raises `ValueError` naming it: the loader makes that row a dead
letter, as the decoder does for the event.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.decode import pgtext
from tidemark.connectors.decode.types import _numeric_text
from tidemark.kernel.names import quote

SESSION_SETTINGS: Final = (
    "SET DateStyle = 'ISO'",
    "SET TimeZone = 'UTC'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

Convert = Callable[[pa.Array], pa.Array]
"""CSV text of one column (string, NULL where SQL NULL) -> the column's Arrow array."""

CATALOG: Final = """
SELECT a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       a.atttypmod,
       COALESCE(NULLIF(b.typname, ''), t.typname)::text,
       COALESCE(b.typtype, t.typtype)::text,
       t.typtype::text,
       e.typname::text,
       e.typtype::text,
       eb.typname::text,
       COALESCE(e.typcategory, ' ')::text,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       a.attnotnull
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
LEFT JOIN pg_type e ON e.oid = COALESCE(b.typelem, t.typelem)
     AND COALESCE(b.typcategory, t.typcategory) = 'A'
LEFT JOIN pg_type eb ON e.typtype = 'd' AND eb.oid = e.typbasetype
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
"""One row per column: name, declared type, typmod, the (domain-resolved) type name and
kind, the declared kind, the array element's name and kind (and a domain element's base),
the element's category, the typmod that applies, NOT NULL."""

_INTEGERS: Final = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64()}
_FLOATS: Final = {"float4": pa.float32(), "float8": pa.float64()}
_GEOMETRIC: Final = frozenset(("box", "circle", "line", "lseg", "path", "polygon"))
_POINT: Final = pa.struct(
    [("x", pa.float64()), ("y", pa.float64()), ("wkb", pa.large_binary()), ("srid", pa.int32())]
)
_NUMBER = re.compile(r"-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|Infinity|NaN)")


@dataclass(frozen=True)
class ColumnPlan:
    """One column as the loader reads it.

    Attributes:
        name: the column name.
        sql: the expression `COPY (SELECT ...)` selects for it.
        arrow: the Arrow type it gets (before the Delta-storable conversion).
        convert: CSV text -> Arrow array of `arrow`.
        declared: the type as Postgres prints it (for messages).
    """

    name: str
    sql: str
    arrow: pa.DataType
    convert: Convert
    declared: str


# -- scalar converters -------------------------------------------------------------------
def _cast(arrow: pa.DataType) -> Convert:
    return lambda text: text.cast(arrow)


def _booleans(text: pa.Array) -> pa.Array:
    return pc.equal(text, pa.scalar("t"))


def _per_value(
    arrow: pa.DataType, parse: Callable[[str], Any], raw: pa.DataType | None = None
) -> Convert:
    """Parse each value in Python: for the rare types no Arrow kernel reads."""

    def convert(text: pa.Array) -> pa.Array:
        values = [None if v is None else parse(v) for v in text.to_pylist()]
        array = pa.array(values, type=raw or arrow)
        return array if raw is None else array.cast(arrow)

    return convert


def _dates(text: pa.Array) -> pa.Array:
    """ISO dates; ±infinity as the decoder's int32 extremes (storable makes them the lake's
    sentinels); BC or years past 9999 go through the exact parser (then Delta refuses them).
    Arrow's parser refuses all of those (`tests/loading/test_types.py`), so a column it
    reads whole holds none."""
    try:
        return text.cast(pa.date32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _per_value(pa.date32(), pgtext._date, pa.int32())(text)


def _timestamps(zoned: bool) -> Convert:
    arrow = pa.timestamp("us", tz="UTC" if zoned else None)

    def convert(text: pa.Array) -> pa.Array:
        try:  # as dates: Arrow refuses the infinities and BC
            return text.cast(arrow)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _per_value(arrow, lambda v: pgtext._stamp(v, zoned=zoned), pa.int64())(text)

    return convert


def _times(text: pa.Array) -> pa.Array:
    """`time` as the lake stores it: `HH:MM:SS.ffffff` (Postgres prints no trailing zeros)."""
    dotted = pc.if_else(
        pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".", "")
    )
    return pc.utf8_rpad(dotted, width=15, padding="0")


def _zoned_time_text(value: str) -> str:
    micros = pgtext._time(value, zoned=True)
    seconds, fraction = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours:02d}:{minute:02d}:{second:02d}.{fraction:06d}"


def _bytes(text: pa.Array) -> pa.Array:
    return _per_value(pa.large_binary(), pgtext._bytes)(text)


def _bits(value: str) -> bytes:
    """Debezium's `io.debezium.data.Bits`: the bits read as a number, little-endian bytes."""
    number = int(value, 2) if value else 0
    return number.to_bytes((number.bit_length() + 7) // 8, "little")


def _point(value: str) -> dict[str, Any]:
    """`(x,y)` -> Debezium's Point struct (x, y, its WKB, no SRID)."""
    x_text, y_text = value.strip("()").split(",")
    x, y = float(x_text), float(y_text)
    return {"x": x, "y": y, "wkb": b"\x01\x01\x00\x00\x00" + struct.pack("<dd", x, y), "srid": None}


def _java_number(match: re.Match[str]) -> str:
    """A number as Java's `Double.toString` prints it (how the JDBC driver prints geometry)."""
    text = match.group(0)
    if text in ("Infinity", "-Infinity", "NaN"):
        return text
    number = float(text)
    if number == int(number) and abs(number) < 1e7:
        return f"{int(number)}.0" if number or not text.startswith("-") else "-0.0"
    shown = repr(number)
    if "e" in shown:
        mantissa, exponent = shown.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}E{int(exponent)}"
    return shown


def _geometry(value: str) -> str:
    return _NUMBER.sub(_java_number, value)


def _hstore_json(value: str) -> str:
    """`hstore_to_json` text -> the compact JSON Debezium writes for hstore."""
    return json.dumps(json.loads(value), ensure_ascii=False, separators=(",", ":"))


def _numerics(typmod: int) -> tuple[pa.DataType, Convert]:
    """numeric(p, s) as the decoder types Debezium's exact text (types.py `_numeric_text`):
    decimal(p, s) up to p = 76 (Arrow's parser refuses rather than rounds), the text beyond
    or without a precision; NaN and the infinities have no decimal: a `ValueError`."""
    precision = ((typmod - 4) >> 16) & 0xFFFF if typmod >= 4 else 0
    scale = (typmod - 4) & 0xFFFF if typmod >= 4 else 0
    column = _numeric_text(
        {
            "__debezium.source.column.length": str(precision),
            "__debezium.source.column.scale": str(scale),
        },
        "NUMERIC",
    )
    return column.arrow, _decimal_text(column.arrow, f"numeric({precision},{scale})")


def _decimal_text(arrow: pa.DataType, declared: str) -> Convert:
    def convert(text: pa.Array) -> pa.Array:
        if pa.types.is_string(arrow):
            return text  # bare numeric, or beyond 76 digits: the exact text
        try:
            return text.cast(arrow)
        except pa.ArrowInvalid:  # NaN and the infinities among the values?
            words = pc.match_substring_regex(text, "[A-Za-z]$")
            if pc.any(words).as_py():
                word = pc.filter(text, words)[0].as_py()
                raise ValueError(f"numeric `{word}` has no value in {declared}") from None
            raise

    return convert


def _money() -> tuple[pa.DataType, Convert]:
    column = _numeric_text({}, "MONEY")
    return column.arrow, _decimal_text(column.arrow, "money")


# -- arrays ------------------------------------------------------------------------------
def _array(element: str, typmod: int, category: str) -> tuple[pa.DataType, Convert]:
    """A JSON array of element texts -> list<element type> (connectors/decode/pgtext.py)."""
    params: dict[str, str] = {}
    if element == "numeric" and typmod >= 4:
        params = {
            "tidemark.length": str(((typmod - 4) >> 16) & 0xFFFF),
            "tidemark.scale": str((typmod - 4) & 0xFFFF),
        }
    item, convert_items = pgtext.element_type(element, params, _numeric_text)
    arrow = pa.list_(item)

    def convert(text: pa.Array) -> pa.Array:
        offsets = [0]
        flat: list[Any] = []
        mask = []
        for value in text.to_pylist():
            mask.append(value is None)
            if value is not None:
                items = orjson.loads(value)
                if any(isinstance(i, list) for i in items):
                    raise ValueError(
                        f"array `{value[:80]}` has more than one dimension; the lake keeps "
                        "one-dimensional arrays"
                    )
                flat.extend(items)
            offsets.append(len(flat))
        return pa.ListArray.from_arrays(
            pa.array(offsets, type=pa.int32()),
            convert_items(flat),
            type=arrow,
            mask=pa.array(mask, type=pa.bool_()),
        )

    return arrow, convert


# -- the plan ----------------------------------------------------------------------------
def plan_column(
    name: str,
    declared: str,
    typmod: int,
    base: str,
    kind: str,
    element: str | None,
    element_kind: str | None,
    element_base: str | None,
    element_category: str,
) -> ColumnPlan:
    """The plan of one column (see `CATALOG` for the arguments)."""
    column = quote(name)
    string: tuple[pa.DataType, Convert] = (pa.string(), lambda text: text)
    expression = column
    if element is not None:  # an array (of a domain: of its base type's text)
        if element == "hstore":
            expression = (
                f"CASE WHEN {column} IS NULL THEN NULL ELSE array_to_json(ARRAY("
                f"SELECT hstore_to_json(x)::text FROM unnest({column}) x)) END"
            )
            arrow, convert = _array("text", -1, element_category)
            return ColumnPlan(name, expression, arrow, _then(convert, _list_hstore), declared)
        # Elements as their output texts; char(n) directly (a cast to text drops its padding)
        cast = "" if element == "bpchar" else "::text[]"
        expression = f"array_to_json({column}{cast})"
        own = element if element_kind != "d" else "text"
        arrow, convert = _array(own, typmod, element_category)
        return ColumnPlan(name, expression, arrow, convert, declared)
    arrow_convert: tuple[pa.DataType, Convert]
    if base in _INTEGERS:
        arrow_convert = (_INTEGERS[base], _cast(_INTEGERS[base]))
    elif base in _FLOATS:
        arrow_convert = (_FLOATS[base], _cast(_FLOATS[base]))
    elif base == "bool":
        arrow_convert = (pa.bool_(), _booleans)
    elif base == "numeric":
        arrow_convert = _numerics(typmod)
    elif base == "money":
        expression = f"{column}::numeric"
        arrow_convert = _money()
    elif base in ("bit", "varbit"):
        if typmod == 1:  # bit(1), varbit(1): a boolean
            arrow_convert = (pa.bool_(), lambda text: pc.equal(text, pa.scalar("1")))
        else:
            arrow_convert = (pa.large_binary(), _per_value(pa.large_binary(), _bits))
    elif base == "bytea":
        arrow_convert = (pa.large_binary(), _bytes)
    elif base == "date":
        arrow_convert = (pa.date32(), _dates)
    elif base in ("timestamp", "timestamptz"):
        zoned = base == "timestamptz"
        arrow_convert = (pa.timestamp("us", tz="UTC" if zoned else None), _timestamps(zoned))
    elif base == "time":
        arrow_convert = (pa.string(), _times)
    elif base == "timetz":
        arrow_convert = (pa.string(), _per_value(pa.string(), _zoned_time_text))
    elif base == "interval":
        arrow_convert = (
            pa.month_day_nano_interval(),
            _per_value(pa.month_day_nano_interval(), pgtext.interval),
        )
    elif base == "hstore":
        expression = f"hstore_to_json({column})::text"
        arrow_convert = (pa.string(), _per_value(pa.string(), _hstore_json))
    elif base == "point":
        arrow_convert = (_POINT, _per_value(_POINT, _point))
    elif base in _GEOMETRIC:
        arrow_convert = (pa.string(), _per_value(pa.string(), _geometry))
    else:  # text, varchar, char, uuid, json(b), xml, enums, network, ranges, composites...
        arrow_convert = string
    arrow, convert = arrow_convert
    return ColumnPlan(name, expression, arrow, convert, declared)


def _list_hstore(array: pa.Array) -> pa.Array:
    """hstore[] elements (JSON texts) rewritten compactly, as Debezium sends them."""
    values = array.values
    rewritten = pa.array(
        [None if v is None else _hstore_json(v) for v in values.to_pylist()], pa.string()
    )
    return pa.ListArray.from_arrays(
        array.offsets, rewritten, mask=array.is_null() if array.null_count else None
    )


def _then(first: Convert, second: Convert) -> Convert:
    return lambda text: second(first(text))


def plan_row(rows: Sequence[tuple[Any, ...]]) -> list[ColumnPlan]:
    """The plans of a table's columns from the rows of `CATALOG`."""
    plans = []
    for row in rows:
        name, declared, _, base, kind, _, element, element_kind, element_base, category = row[:10]
        typmod = int(row[10]) if row[10] is not None else -1
        plans.append(
            plan_column(
                name,
                declared,
                typmod,
                base,
                kind,
                element,
                element_kind,
                element_base,
                category,
            )
        )
    return plans


def read_plans(cursor: Any, schema: str, name: str) -> list[ColumnPlan]:
    """The plans of `schema.name`'s columns, read from the catalog (empty: no such table)."""
    cursor.execute(CATALOG, (schema, name))
    return plan_row(cursor.fetchall())

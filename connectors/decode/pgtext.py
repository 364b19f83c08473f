"""Arrays sent as their elements' Postgres text (`tidemark.PgArrayText`), typed again.

Debezium drops or damages arrays of several element types (interval, money, xml, bit,
varbit, point, enums with NULLs, numerics with NaN; time and timetz lose microseconds; any
array with more than one dimension becomes NULL elements). The Java converter
`tidemark.convert.PgArrayText` (connectors/debezium/java) sends every array (but hstore[])
as the text of each element instead, and here they become lists again, of the Arrow type a
scalar of the element type gets (docs/decoding.md): integers, floats, booleans, bytea,
dates and timestamps (±infinity as for scalars), time and timetz (timetz in UTC, as Debezium
sends a scalar timetz), intervals, numerics and money as decimals (exact text for bare
`numeric`), every other element type as its text (text, uuid, json, xml, enums, bits,
network, ranges, geometric types, composites, domains). Postgres prints dates in ISO form
(the default `DateStyle`) and bytea in hex (the default `bytea_output`); text that does not
parse raises `ValueError`: the event becomes a dead letter, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import pyarrow as pa

from tidemark.connectors.decode import temporal

SCHEMA_NAME: Final = "tidemark.PgArrayText"
MULTIDIM: Final = "__tidemark_multidimensional__:"

_UNITS: Final = {
    "year": (12, 0),
    "years": (12, 0),
    "mon": (1, 0),
    "mons": (1, 0),
    "month": (1, 0),
    "months": (1, 0),
    "day": (0, 1),
    "days": (0, 1),
}
_CLOCK = re.compile(r"^([+-])?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")
_TIME = re.compile(
    r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?)?$"
)


def _micros(hours: str, minutes: str, seconds: str, fraction: str | None) -> int:
    whole = (int(hours) * 60 + int(minutes)) * 60 + int(seconds)
    return whole * 1_000_000 + int((fraction or "").ljust(6, "0"))


def interval(text: str) -> tuple[int, int, int]:
    """Postgres's default interval output (`IntervalStyle = postgres`), e.g.
    `-1 years 2 mons -3 days +04:05:06.789`, as (months, days, nanoseconds)."""
    months = days = nanos = 0
    tokens = text.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        clock = _CLOCK.match(token)
        if clock:
            sign, hours, minutes, seconds, fraction = clock.groups()
            value = _micros(hours, minutes, seconds, fraction) * 1000
            nanos += -value if sign == "-" else value
            i += 1
            continue
        if i + 1 < len(tokens) and tokens[i + 1] in _UNITS and re.fullmatch(r"[+-]?\d+", token):
            per_month, per_day = _UNITS[tokens[i + 1]]
            months += int(token) * per_month
            days += int(token) * per_day
            i += 2
            continue
        raise ValueError(f"unexpected interval text `{text}`")
    return months, days, nanos


def _time(text: str, *, zoned: bool) -> int:
    match = _TIME.match(text)
    if match is None or (match.group(5) is not None) != zoned:
        raise ValueError(f"unexpected {'timetz' if zoned else 'time'} text `{text}`")
    hours, minutes, seconds, fraction, sign, oh, om, os_ = match.groups()
    value = _micros(hours, minutes, seconds, fraction)
    if zoned:  # to UTC, as a time of day
        offset = (int(oh) * 3600 + int(om or 0) * 60 + int(os_ or 0)) * 1_000_000
        value = (value - offset if sign == "+" else value + offset) % 86_400_000_000
    return value


def _money(text: str) -> str:
    """`$1,234.50` / `-$0.01` (lc_monetary's output) -> `1234.50` / `-0.01`."""
    negative = text.startswith("-") or text.startswith("(")
    digits = re.sub(r"[^0-9.]", "", text)
    if not digits or digits.count(".") > 1:
        raise ValueError(f"unexpected money text `{text}`")
    return ("-" if negative else "") + digits


_INTEGERS: Final = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64()}
_FLOATS: Final = {"float4": pa.float32(), "float8": pa.float64()}
_BOOLS: Final = {"t": True, "f": False, "true": True, "false": False}
_DATE = re.compile(r"^(\d{4,})-(\d{2})-(\d{2})( BC)?$")
_STAMP = re.compile(
    r"^(\d{4,})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?)?( BC)?$"
)


def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (ISO year; 0 is 1 BC)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _date(text: str) -> int:
    if text in ("infinity", "-infinity"):
        return temporal.DATE_INFINITY if text == "infinity" else temporal.DATE_MINUS_INFINITY
    match = _DATE.match(text)
    if match is None:
        raise ValueError(f"unexpected date text `{text}` (DateStyle must be ISO)")
    year = int(match.group(1))
    return _days(1 - year if match.group(4) else year, int(match.group(2)), int(match.group(3)))


def _stamp(text: str, *, zoned: bool) -> int:
    if text in ("infinity", "-infinity"):
        return temporal.INFINITY_US if text == "infinity" else temporal.MINUS_INFINITY_US
    match = _STAMP.match(text)
    if match is None or (match.group(8) is not None) != zoned:
        raise ValueError(f"unexpected timestamp text `{text}` (DateStyle must be ISO)")
    year, month, day, hour, minute, second, fraction, sign, oh, om, os_, bc = match.groups()
    days = _days(1 - int(year) if bc else int(year), int(month), int(day))
    value = days * 86_400_000_000 + _micros(hour, minute, second, fraction)
    if zoned:
        offset = (int(oh) * 3600 + int(om or 0) * 60 + int(os_ or 0)) * 1_000_000
        value = value - offset if sign == "+" else value + offset
    return value


def _bytes(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError("unexpected bytea text (bytea_output must be hex)")
    return bytes.fromhex(text[2:])


def _typed(
    arrow: pa.DataType, parse: Callable[[str], Any], cast: pa.DataType | None = None
) -> tuple[pa.DataType, Callable[[Sequence[Any]], pa.Array]]:
    def convert(values: Sequence[Any]) -> pa.Array:
        parsed = pa.array([None if v is None else parse(v) for v in values], type=cast or arrow)
        return parsed if cast is None else parsed.cast(arrow)

    return arrow, convert


def element_type(
    element: str, params: dict[str, str], numeric: Callable[[dict[str, str], str], Any]
) -> tuple[pa.DataType, Callable[[Sequence[Any]], pa.Array]]:
    """(Arrow type, converter of a flat list of element texts) for one element type: the
    same Arrow type Debezium's own conversion of a scalar of that type gets in the decoder.

    `numeric(params, source_type)` is the decoder's numeric text column (types.py), reused
    so `numeric(p, s)[]` elements are built exactly like `numeric(p, s)` columns.
    """
    if element in _INTEGERS:
        return _typed(_INTEGERS[element], int)
    if element in _FLOATS:
        return _typed(_FLOATS[element], float)
    if element == "bool":
        return _typed(pa.bool_(), _BOOLS.__getitem__)
    if element == "bytea":
        return _typed(pa.large_binary(), _bytes)
    if element == "date":
        return _typed(pa.date32(), _date, pa.int32())
    if element in ("timestamp", "timestamptz"):
        zoned = element == "timestamptz"
        arrow = pa.timestamp("us", tz="UTC" if zoned else None)
        return _typed(arrow, lambda v: _stamp(v, zoned=zoned), pa.int64())
    if element == "interval":
        return _typed(pa.month_day_nano_interval(), interval)
    if element in ("time", "timetz"):
        zoned = element == "timetz"
        return _typed(pa.time64("us"), lambda v: _time(v, zoned=zoned), pa.int64())
    if element in ("numeric", "money"):
        kind = numeric(
            {
                "__debezium.source.column.length": params.get("tidemark.length", "0"),
                "__debezium.source.column.scale": params.get("tidemark.scale", "0"),
            },
            element.upper(),
        )
        if element == "money":
            return kind.arrow, lambda values: kind.convert(
                [None if v is None else _money(v) for v in values]
            )
        return kind.arrow, kind.convert
    return pa.string(), lambda values: pa.array(values, type=pa.string())


def check_dimensions(values: Sequence[Any]) -> None:
    """Raise for an array the converter marked as having more than one dimension."""
    for value in values:
        if value and isinstance(value[0], str) and value[0].startswith(MULTIDIM):
            text = value[0][len(MULTIDIM) :]
            raise ValueError(
                f"array `{text[:80]}` has more than one dimension; the lake keeps one-dimensional"
                " arrays"
            )

"""Kafka Connect schemas (plus Debezium semantic types) to exact Arrow types.

Each Connect field becomes a `ColumnType`: the Arrow type and a function that turns the
field's JSON values for a whole batch (a Python list) into one Arrow array. Working per
column keeps the per-row Python work to a list append; the conversions run in pyarrow.
docs/decoding.md has the full mapping table and the reasons behind each choice.
"""

from __future__ import annotations

import re
from binascii import a2b_base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.decode.settings import UNAVAILABLE_VALUE

Converter = Callable[[Sequence[Any]], pa.Array]

_PLACEHOLDER_BYTES: Final = UNAVAILABLE_VALUE.encode()
_PLACEHOLDER_B64: Final = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
# What Debezium puts in an unchanged TOAST array: the placeholder as one string element,
# or, for arrays of numbers, the placeholder's bytes as numbers (seen on real envelopes).
_PLACEHOLDER_LISTS: Final = ([UNAVAILABLE_VALUE], list(_PLACEHOLDER_BYTES))


# Postgres +/-infinity: we store the int64 (timestamps) or int32 (dates) extremes.
INFINITY_US: Final = 2**63 - 1
MINUS_INFINITY_US: Final = -(2**63) + 1
_EXTREMES: Final = frozenset((INFINITY_US, MINUS_INFINITY_US))
# Debezium's documented sentinels for Postgres timestamp +/-infinity (micro timestamps).
_INFINITIES: Final = {9223372036825200000: INFINITY_US, -9223372036832400000: MINUS_INFINITY_US}
# Postgres stores date infinity as int32 max/min days since 2000-01-01; Debezium adds the
# 10957 days to 1970 in 32 bits and wraps around to these values (seen on real events).
_DATE_INFINITIES: Final = {-2147472692: 2**31 - 1, -2147472691: -(2**31)}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """How one Connect field becomes one Arrow column.

    Attributes:
        arrow: the Arrow type of the column.
        convert: JSON values of the field for a batch -> Arrow array (None stays null).
        placeholders: the JSON forms of Debezium's unavailable-value placeholder this
            field can carry (unchanged TOAST values); empty when it cannot.
    """

    arrow: pa.DataType
    convert: Converter
    placeholders: tuple[Any, ...] = ()


def _plain(arrow: pa.DataType) -> ColumnType:
    return ColumnType(arrow, lambda values: pa.array(values, type=arrow))


def _floats(arrow: pa.DataType) -> ColumnType:
    """Floats; Debezium writes NaN and the infinities as the strings "NaN", "Infinity"."""

    def convert(values: Sequence[Any]) -> pa.Array:
        try:
            return pa.array(values, type=arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return pa.array([float(v) if v.__class__ is str else v for v in values], type=arrow)

    return ColumnType(arrow, convert)


def _bytes(values: Sequence[Any]) -> pa.Array:
    return pa.array(
        [None if v is None else a2b_base64(v, strict_mode=True) for v in values],
        type=pa.large_binary(),
    )


def _unscaled(value: str) -> int:
    return int.from_bytes(a2b_base64(value, strict_mode=True), "big", signed=True)


def _decimal(scale: int, precision: int | None) -> ColumnType:
    """Connect Decimal: base64 big-endian two's-complement unscaled integer + fixed scale.

    Built straight from the unscaled integers (no Python Decimal objects): the Arrow
    decimal buffers are little-endian two's complement of the same integers.
    """
    precision = precision or 38
    if precision > 76:
        return ColumnType(pa.string(), lambda values: _decimal_strings(values, scale))
    width = 16 if precision <= 38 else 32
    arrow = pa.decimal128(precision, scale) if width == 16 else pa.decimal256(precision, scale)
    zero = bytes(width)

    def convert(values: Sequence[Any]) -> pa.Array:
        valid = [v is not None for v in values]
        data = b"".join(
            zero if v is None else _unscaled(v).to_bytes(width, "little", signed=True)
            for v in values
        )
        mask = None if all(valid) else pa.array(valid, type=pa.bool_()).buffers()[1]
        nulls = len(values) - sum(valid)
        return pa.Array.from_buffers(arrow, len(values), [mask, pa.py_buffer(data)], nulls)

    return ColumnType(arrow, convert)


def decimal_text(unscaled: int, scale: int) -> str:
    """The exact decimal text of `unscaled * 10**-scale` (no exponent, scale kept)."""
    sign = "-" if unscaled < 0 else ""
    digits = str(abs(unscaled))
    if scale <= 0:
        return sign + digits + "0" * -scale
    digits = digits.rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def _decimal_strings(values: Sequence[Any], scale: int) -> pa.Array:
    return pa.array(
        [None if v is None else decimal_text(_unscaled(v), scale) for v in values], type=pa.string()
    )


def _variable_decimal(values: Sequence[Any]) -> pa.Array:
    """VariableScaleDecimal (unconstrained NUMERIC): exact decimal text, scale preserved."""
    return pa.array(
        [None if v is None else decimal_text(_unscaled(v["value"]), v["scale"]) for v in values],
        type=pa.string(),
    )


def _scaled_ints(factor: int, arrow: pa.DataType) -> ColumnType:
    """Integer epoch/clock values, rescaled to the Arrow unit (`factor` 1 = as is).

    Postgres +/-infinity arrive as Debezium sentinels (see `_INFINITIES`) or overflow when
    rescaled; both become the int64 extremes, as for zoned timestamps.
    """

    def convert(values: Sequence[Any]) -> pa.Array:
        ints = pa.array(values, type=pa.int64())
        if _INFINITIES.keys() & set(values):
            ints = pa.array([_INFINITIES.get(v, v) for v in values], type=pa.int64())
            if factor != 1:
                ints = pa.array(
                    [
                        None if v is None else v if v in _EXTREMES else v * factor
                        for v in ints.to_pylist()
                    ],
                    type=pa.int64(),
                )
        elif factor != 1:
            try:
                ints = pc.multiply_checked(ints, factor)
            except pa.ArrowInvalid:  # only an infinity sentinel can overflow
                ints = pa.array(
                    [None if v is None else _clamp(v * factor) for v in values], type=pa.int64()
                )
        return ints.cast(arrow)

    return ColumnType(arrow, convert)


def _clamp(value: int) -> int:
    return (
        INFINITY_US
        if value > INFINITY_US
        else MINUS_INFINITY_US
        if value < MINUS_INFINITY_US
        else value
    )


def _date(values: Sequence[Any]) -> pa.Array:
    """Epoch days; Postgres date +/-infinity overflow inside Debezium to fixed values."""
    if _DATE_INFINITIES.keys() & set(values):
        values = [_DATE_INFINITIES.get(v, v) for v in values]
    return pa.array(values, type=pa.date32())


def _zoned_timestamp(unit: str) -> ColumnType:
    """ISO-8601 UTC strings; Arrow's parser refuses (never truncates) extra precision."""
    arrow = pa.timestamp(unit, tz="UTC")
    specials = {"infinity": INFINITY_US, "-infinity": MINUS_INFINITY_US}

    def convert(values: Sequence[Any]) -> pa.Array:
        if not any(v in specials for v in values if v is not None and len(v) < 10):
            return pa.array(values, type=pa.string()).cast(arrow)
        plain = [None if v in specials else v for v in values]
        parsed = pa.array(plain, type=pa.string()).cast(arrow).cast(pa.int64()).to_pylist()
        ints = [
            specials.get(v, p) if v is not None else None
            for v, p in zip(values, parsed, strict=True)
        ]
        return pa.array(ints, type=pa.int64()).cast(arrow)

    return ColumnType(arrow, convert)


_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


def _zoned_time(values: Sequence[Any]) -> pa.Array:
    """ZonedTime `HH:MM:SS[.f]Z` (Debezium normalises to UTC) -> time64[us] in UTC."""
    out: list[int | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        match = _TIME.match(value)
        if match is None or match.group(5) not in (None, "Z"):
            raise ValueError(f"unexpected ZonedTime `{value}`")
        hours, minutes, seconds, fraction = match.group(1, 2, 3, 4)
        micros = int((fraction or "").ljust(6, "0")[:6])
        if fraction and len(fraction) > 6 and int(fraction[6:]):
            raise ValueError(f"ZonedTime `{value}` has more than microsecond precision")
        out.append(((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + micros)
    return pa.array(out, type=pa.int64()).cast(pa.time64("us"))


_INTERVAL = re.compile(
    r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?)(\d+)(?:\.(\d{1,9}))?S)?)?$"
)


def parse_interval(value: str) -> tuple[int, int, int]:
    """Debezium's ISO-8601 interval (`P-1Y-2M3DT-4H-5M-6.789S`) -> (months, days, nanos)."""
    match = _INTERVAL.match(value)
    if match is None:
        raise ValueError(f"unexpected interval `{value}`")
    years, months, days, hours, minutes, sec_sign, secs, frac = match.groups()
    nanos = int(secs or 0) * 10**9 + int((frac or "").ljust(9, "0"))
    if sec_sign:
        nanos = -nanos
    nanos += (int(hours or 0) * 60 + int(minutes or 0)) * 60 * 10**9
    return int(years or 0) * 12 + int(months or 0), int(days or 0), nanos


def _interval(values: Sequence[Any]) -> pa.Array:
    return pa.array(
        [None if v is None else parse_interval(v) for v in values],
        type=pa.month_day_nano_interval(),
    )


def _array(item: ColumnType) -> ColumnType:
    """Connect arrays -> list<item>: flatten, convert the items once, rebuild offsets."""
    arrow = pa.list_(item.arrow)

    def convert(values: Sequence[Any]) -> pa.Array:
        offsets = [0]
        flat: list[Any] = []
        for v in values:
            if v is not None:
                flat.extend(v)
            offsets.append(len(flat))
        mask = pa.array([v is None for v in values], type=pa.bool_())
        return pa.ListArray.from_arrays(
            pa.array(offsets, type=pa.int32()), item.convert(flat), type=arrow, mask=mask
        )

    return ColumnType(arrow, convert, _PLACEHOLDER_LISTS)


def _struct(fields: list[tuple[str, ColumnType]]) -> ColumnType:
    arrow = pa.struct([pa.field(name, col.arrow) for name, col in fields])

    def convert(values: Sequence[Any]) -> pa.Array:
        children = [
            col.convert([None if v is None else v.get(name) for v in values])
            for name, col in fields
        ]
        mask = pa.array([v is None for v in values], type=pa.bool_())
        return pa.StructArray.from_arrays(children, fields=list(arrow), mask=mask)

    return ColumnType(arrow, convert)


def _as_text(values: Sequence[Any]) -> pa.Array:
    return pa.array(
        [
            None if v is None else v if v.__class__ is str else orjson.dumps(v).decode()
            for v in values
        ],
        type=pa.string(),
    )


_STRING = ColumnType(
    pa.string(), lambda values: pa.array(values, type=pa.string()), (UNAVAILABLE_VALUE,)
)
_BYTES = ColumnType(pa.large_binary(), _bytes, (_PLACEHOLDER_B64,))

_PRIMITIVES: Final[dict[str, ColumnType]] = {
    "boolean": _plain(pa.bool_()),
    "int8": _plain(pa.int8()),
    "int16": _plain(pa.int16()),
    "int32": _plain(pa.int32()),
    "int64": _plain(pa.int64()),
    "float": _floats(pa.float32()),
    "float32": _floats(pa.float32()),
    "double": _floats(pa.float64()),
    "float64": _floats(pa.float64()),
    "string": _STRING,
    "bytes": _BYTES,
}

# Semantic types by Connect schema name. Names not listed fall back to the literal type
# (io.debezium.data.Uuid, Json, Enum, EnumSet, Xml, Ltree, ... are strings already).
_SEMANTIC: Final[dict[str, ColumnType]] = {
    "io.debezium.time.Date": ColumnType(pa.date32(), _date),
    "org.apache.kafka.connect.data.Date": ColumnType(pa.date32(), _date),
    "io.debezium.time.Time": _scaled_ints(1000, pa.time64("us")),
    "org.apache.kafka.connect.data.Time": _scaled_ints(1000, pa.time64("us")),
    "io.debezium.time.MicroTime": _scaled_ints(1, pa.time64("us")),
    "io.debezium.time.NanoTime": _scaled_ints(1, pa.time64("ns")),
    "io.debezium.time.Timestamp": _scaled_ints(1000, pa.timestamp("us")),
    "org.apache.kafka.connect.data.Timestamp": _scaled_ints(1000, pa.timestamp("us")),
    "io.debezium.time.MicroTimestamp": _scaled_ints(1, pa.timestamp("us")),
    "io.debezium.time.NanoTimestamp": _scaled_ints(1, pa.timestamp("ns")),
    "io.debezium.time.MicroDuration": _scaled_ints(1, pa.duration("us")),
    "io.debezium.time.NanoDuration": _scaled_ints(1, pa.duration("ns")),
    "io.debezium.time.ZonedTime": ColumnType(pa.time64("us"), _zoned_time),
    "io.debezium.time.Interval": ColumnType(pa.month_day_nano_interval(), _interval),
    "io.debezium.data.VariableScaleDecimal": ColumnType(pa.string(), _variable_decimal),
    "io.debezium.data.Bits": _BYTES,
}


def column_type(schema: dict[str, Any], *, zoned_unit: str = "us") -> ColumnType:
    """The Arrow column for one Connect field schema.

    Args:
        schema: the Connect schema of the field (`type`, optional `name`, `parameters`,
            `items` for arrays, `fields` for structs).
        zoned_unit: unit for ZonedTimestamp strings: "us" for Postgres (its precision),
            "ns" for SQL Server datetimeoffset(7).

    Raises:
        ValueError: a Connect type this decoder does not know.
    """
    name = schema.get("name")
    kind = schema["type"]
    if name == "org.apache.kafka.connect.data.Decimal":
        params = schema.get("parameters") or {}
        precision = params.get("connect.decimal.precision")
        return _decimal(int(params.get("scale", 0)), int(precision) if precision else None)
    if name == "io.debezium.time.ZonedTimestamp":
        return _zoned_timestamp(zoned_unit)
    if name in _SEMANTIC:
        return _SEMANTIC[name]
    if kind == "array":
        return _array(column_type(schema["items"], zoned_unit=zoned_unit))
    if kind == "struct":
        return _struct(
            [(f["field"], column_type(f, zoned_unit=zoned_unit)) for f in schema["fields"]]
        )
    if kind == "map":
        return ColumnType(pa.string(), _as_text)
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise ValueError(f"unknown Connect type `{kind}` (schema name `{name}`)")

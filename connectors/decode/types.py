"""Kafka Connect schemas (plus Debezium semantic types) to exact Arrow types.

Each Connect field becomes a `ColumnType`: the Arrow type and a function that turns the
field's JSON values for a whole batch (a Python list) into one Arrow array. Working per
column keeps the per-row Python work to a list append; the conversions run in pyarrow.
docs/decoding.md has the full mapping table and the reasons behind each choice.
"""

from __future__ import annotations

from binascii import a2b_base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa

from tidemark.connectors.decode import pgtext, temporal
from tidemark.connectors.decode.settings import UNAVAILABLE_VALUE
from tidemark.connectors.decode.temporal import (  # noqa: F401  (re-exported)
    INFINITY_US,
    MINUS_INFINITY_US,
    parse_interval,
)

Converter = Callable[[Sequence[Any]], pa.Array]

_PLACEHOLDER_BYTES: Final = UNAVAILABLE_VALUE.encode()
_PLACEHOLDER_B64: Final = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
# What Debezium puts in an unchanged TOAST array: the placeholder as one string element,
# or, for arrays of numbers, the placeholder's bytes as numbers (seen on real envelopes).
_PLACEHOLDER_LISTS: Final = ([UNAVAILABLE_VALUE], list(_PLACEHOLDER_BYTES))


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


_NUMERIC_WORDS: Final = {
    "NAN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
}
_VARIABLE_LENGTHS: Final = frozenset((0, 131089))  # what Postgres reports for bare `numeric`


def _numeric_text(params: dict[str, str], source_type: str) -> ColumnType:
    """NUMERIC/MONEY as Debezium's exact text (`decimal.handling.mode=string`).

    `numeric(p, s)` becomes `decimal(p, s)` (128 bits up to p = 38, 256 up to 76, the exact
    text beyond), built by Arrow's parser, which refuses rather than rounds. NaN and the
    infinities have no decimal: such a value raises (the event is a dead letter, never
    NULL). Bare `numeric` stays its exact text, NaN and the infinities spelled as Postgres
    spells them. MONEY is `decimal(38, 2)`, as with the `precise` mode.
    """
    length = int(params.get("__debezium.source.column.length") or 0)
    scale = int(params.get("__debezium.source.column.scale") or 0)
    if source_type in ("MONEY", "_MONEY"):
        length, scale = 38, 2
    elif length in _VARIABLE_LENGTHS and scale == 0:
        return ColumnType(pa.string(), _numeric_words, (UNAVAILABLE_VALUE,))
    if length > 76:
        arrow: pa.DataType = pa.string()
    elif length > 38:
        arrow = pa.decimal256(length, scale)
    else:
        arrow = pa.decimal128(length, scale)

    def convert(values: Sequence[Any]) -> pa.Array:
        special = next((v for v in values if v is not None and v[-1:].isalpha()), None)
        if special is not None:
            word = _NUMERIC_WORDS.get(special, special)
            raise ValueError(f"numeric `{word}` has no value in numeric({length},{scale})")
        text = pa.array(values, type=pa.string())
        return text if arrow == pa.string() else text.cast(arrow)

    return ColumnType(arrow, convert, (UNAVAILABLE_VALUE,))


def _numeric_words(values: Sequence[Any]) -> pa.Array:
    if any(v is not None and v[-1:].isalpha() for v in values):
        values = [
            v if v is None or not v[-1:].isalpha() else _NUMERIC_WORDS.get(v, v) for v in values
        ]
    return pa.array(values, type=pa.string())


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


def _text_array(params: dict[str, str]) -> ColumnType:
    """An array the Java converter sent as element texts (connectors/decode/pgtext.py)."""
    arrow, convert = pgtext.element_type(params.get("tidemark.element", ""), params, _numeric_text)
    listed = _array(ColumnType(arrow, convert))

    def checked(values: Sequence[Any]) -> pa.Array:
        pgtext.check_dimensions(values)
        return listed.convert(values)

    return ColumnType(listed.arrow, checked, listed.placeholders)


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


def _epoch(factor: int, arrow: pa.DataType) -> ColumnType:
    """Timestamps since the epoch: infinities told apart (connectors/decode/temporal.py)."""
    return ColumnType(arrow, temporal.epoch_ints(factor, arrow, timestamp=True))


def _clock(factor: int, arrow: pa.DataType) -> ColumnType:
    """Times of day, durations, nanosecond timestamps (SQL Server): no infinities."""
    return ColumnType(arrow, temporal.epoch_ints(factor, arrow, timestamp=False))


_STRING = ColumnType(
    pa.string(), lambda values: pa.array(values, type=pa.string()), (UNAVAILABLE_VALUE,)
)
_BYTES = ColumnType(pa.large_binary(), _bytes, (_PLACEHOLDER_B64,))
_NUMERIC_TYPES: Final = frozenset(("NUMERIC", "_NUMERIC", "MONEY", "_MONEY"))


def _text_of_bytes(values: Sequence[Any]) -> pa.Array:
    """Base64 of UTF-8 text (how unknown types arrive) -> the text."""
    return pa.array(
        [None if v is None else a2b_base64(v, strict_mode=True).decode() for v in values],
        type=pa.string(),
    )


_UNKNOWN_TEXT = ColumnType(pa.string(), _text_of_bytes, (_PLACEHOLDER_B64,))

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
    "io.debezium.time.Date": ColumnType(pa.date32(), temporal.dates),
    "org.apache.kafka.connect.data.Date": ColumnType(pa.date32(), temporal.dates),
    "io.debezium.time.Time": _clock(1000, pa.time64("us")),
    "org.apache.kafka.connect.data.Time": _clock(1000, pa.time64("us")),
    "io.debezium.time.MicroTime": _clock(1, pa.time64("us")),
    "io.debezium.time.NanoTime": _clock(1, pa.time64("ns")),
    "io.debezium.time.Timestamp": _epoch(1000, pa.timestamp("us")),
    "org.apache.kafka.connect.data.Timestamp": _epoch(1000, pa.timestamp("us")),
    "io.debezium.time.MicroTimestamp": _epoch(1, pa.timestamp("us")),
    "io.debezium.time.NanoTimestamp": _clock(1, pa.timestamp("ns")),
    "io.debezium.time.MicroDuration": _clock(1, pa.duration("us")),
    "io.debezium.time.NanoDuration": _clock(1, pa.duration("ns")),
    "io.debezium.time.ZonedTime": ColumnType(pa.time64("us"), temporal.zoned_times),
    "io.debezium.time.Interval": ColumnType(pa.month_day_nano_interval(), temporal.intervals),
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
        arrow = pa.timestamp(zoned_unit, tz="UTC")
        return ColumnType(arrow, temporal.zoned_timestamps(zoned_unit))
    if name in _SEMANTIC:
        return _SEMANTIC[name]
    params = schema.get("parameters") or {}
    if name == pgtext.SCHEMA_NAME:
        return _text_array(params)
    source_type = params.get("__debezium.source.column.type")
    if name is None and source_type in _NUMERIC_TYPES:
        if kind == "string":
            return _numeric_text(params, source_type)
        if kind == "array" and schema["items"].get("type") == "string":
            return _array(_numeric_text(params, source_type))
    if name is None and kind == "bytes" and source_type not in (None, "BYTEA"):
        return _UNKNOWN_TEXT  # a type Debezium does not map: the bytes of its text form
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

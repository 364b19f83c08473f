"""Postgres types in DDL messages: their lake (Arrow) types, which changes widen, and values.

The event trigger names types as `format_type` prints them (`integer`, `numeric(12,4)`,
`character varying(20)`, `timestamp without time zone`) and sends values as `to_jsonb` prints
them (json/jsonb as their text, bytea as base64). This module maps both to what the decoder
would have produced for the same column with the Delta target (docs/decoding.md), so a filled
value equals the one Debezium sends for rows written later.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.decode.storable import delta_array
from tidemark.connectors.decode.types import INFINITY_US, MINUS_INFINITY_US

_INTEGERS = {"smallint": (pa.int16(), 5), "integer": (pa.int32(), 10), "bigint": (pa.int64(), 19)}
_TEXTS = ("text", "uuid", "json", "jsonb", "xml", "citext", "name")
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_VARCHAR = re.compile(r"^character varying(?:\((\d+)\))?$")
_TIMESTAMP = re.compile(r"^timestamp(?:\((\d)\))? (with|without) time zone$")
_DATE_INFINITY = {"infinity": 2**31 - 1, "-infinity": -(2**31)}
_TS_INFINITY = {"infinity": INFINITY_US, "-infinity": MINUS_INFINITY_US}
_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z", "UCT", "Etc/UCT", "Zulu"})


def _exact_type(pg_type: str) -> pa.DataType | None:
    """The decoder's exact Arrow type for a Postgres type (`Decoder(target="arrow")`)."""
    if pg_type in _INTEGERS:
        return _INTEGERS[pg_type][0]
    if pg_type in _TEXTS or _VARCHAR.match(pg_type) or pg_type.startswith("character("):
        return pa.string()
    if pg_type == "boolean":
        return pa.bool_()
    if pg_type == "real":
        return pa.float32()
    if pg_type == "double precision":
        return pa.float64()
    if pg_type == "numeric":
        return pa.string()  # variable scale: the exact decimal text
    if match := _NUMERIC.match(pg_type):
        precision, scale = int(match.group(1)), int(match.group(2))
        if precision <= 38:
            return pa.decimal128(precision, scale)
        return pa.decimal256(precision, scale) if precision <= 76 else pa.string()
    if pg_type == "bytea":
        return pa.large_binary()
    if pg_type == "date":
        return pa.date32()
    if match := _TIMESTAMP.match(pg_type):
        return pa.timestamp("us", tz="UTC" if match.group(2) == "with" else None)
    return None


def lake_type(pg_type: str) -> pa.DataType | None:
    """The lake's Arrow type for a Postgres type, or None for types not handled here."""
    exact = _exact_type(pg_type)
    return None if exact is None else delta_array(pa.nulls(0, exact)).type


def _value(value: Any, pg_type: str, exact: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_floating(exact):
        return float(value)  # "NaN", "Infinity" arrive as strings
    if pa.types.is_decimal(exact):
        return Decimal(str(value))
    if pa.types.is_string(exact):
        if isinstance(value, str):
            return value
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    if pa.types.is_binary(exact) or pa.types.is_large_binary(exact):
        return base64.b64decode(value)
    if pa.types.is_date32(exact):
        if value in _DATE_INFINITY:
            return _DATE_INFINITY[value]
        return (date.fromisoformat(value) - date(1970, 1, 1)).days
    if pa.types.is_timestamp(exact):
        if value in _TS_INFINITY:
            return _TS_INFINITY[value]
        moment = datetime.fromisoformat(value)
        if exact.tz is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        delta = moment - datetime(1970, 1, 1)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value


def json_values(values: list[Any], pg_type: str, target: pa.DataType | None = None) -> pa.Array:
    """Values as the trigger sent them, as the lake stores them (`target`, else the type's).

    Raises:
        ValueError: the type is not handled here, or a value does not convert.
    """
    exact = _exact_type(pg_type)
    if exact is None:
        raise ValueError(f"values of type `{pg_type}` cannot be converted here")
    converted = [_value(v, pg_type, exact) for v in values]
    if pa.types.is_date32(exact) or pa.types.is_timestamp(exact):
        raw = pa.int32() if pa.types.is_date32(exact) else pa.int64()
        array = pa.array(converted, raw).cast(exact)
    else:
        array = pa.array(converted, exact)
    stored = delta_array(array)
    if target is not None and stored.type != target:
        stored = pc.cast(stored, target, safe=True)
    return stored


@dataclass(frozen=True)
class TypeChange:
    """The verdict on `ALTER COLUMN ... TYPE`: widen the lake's column, or refuse.

    Attributes:
        widens: True when every old value converts exactly.
        to_type: the lake type after the change (None when refused or unknown).
        reason: why it is refused (None when it widens).
        time_zone: for timestamp -> timestamptz, the zone Postgres read the values in.
    """

    widens: bool
    to_type: pa.DataType | None
    reason: str | None = None
    time_zone: str | None = None

    def convert(self, array: pa.Array) -> pa.Array:
        """Old lake values in the new type (naive timestamps read in `time_zone`)."""
        assert self.to_type is not None
        if (
            pa.types.is_timestamp(array.type)
            and array.type.tz is None
            and pa.types.is_timestamp(self.to_type)
            and self.to_type.tz is not None
        ):
            return _assume_zone(array, self.time_zone or "UTC", self.to_type)
        return pc.cast(array, self.to_type, safe=True)


def _assume_zone(array: pa.Array, zone: str, target: pa.DataType) -> pa.Array:
    """Naive timestamps read as local times in `zone` (what Postgres does), kept as UTC.

    Postgres reads a local time that occurs twice (clocks going back) as the later instant,
    and one that does not occur (clocks going forward) with the offset before the jump; the
    range ends (Tidemark's +/-infinity) stay the range ends.
    """
    if zone in _UTC_ZONES:
        return array.cast(target)
    ints = array.cast(pa.int64())
    ends = pc.is_in(ints, value_set=pa.array([253_402_300_799_999_999, -62_135_596_800_000_000]))
    try:
        local = pc.assume_timezone(array, timezone=zone, ambiguous="latest", nonexistent="raise")
    except pa.ArrowInvalid:  # a time in a gap: Python's zoneinfo knows what Postgres does
        tz = ZoneInfo(zone)
        local = pa.array(
            [None if v is None else _pg_local(v, tz) for v in array.to_pylist()],
            pa.timestamp("us", tz=zone),
        )
    moved = local.cast(target).cast(pa.int64())
    return pc.if_else(ends, ints, moved).cast(target)


def _pg_local(value: datetime, tz: ZoneInfo) -> datetime:
    later = value.replace(tzinfo=tz, fold=1)
    if later.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == value:
        return later  # exists (once or twice: the later one)
    return value.replace(tzinfo=tz, fold=0)  # in a gap: the offset before the jump


def _rank(pg_type: str) -> tuple[str, int, int]:
    """(family, size, scale) for comparisons; size -1 means unbounded."""
    if pg_type in _INTEGERS:
        return "integer", _INTEGERS[pg_type][1], 0
    if match := _NUMERIC.match(pg_type):
        return "numeric", int(match.group(1)), int(match.group(2))
    if pg_type == "numeric":
        return "numeric", -1, -1
    if pg_type == "text":
        return "text", -1, 0
    if match := _VARCHAR.match(pg_type):
        return "text", int(match.group(1)) if match.group(1) else -1, 0
    if pg_type in ("real", "double precision"):
        return "float", 1 if pg_type == "real" else 2, 0
    if match := _TIMESTAMP.match(pg_type):
        digits = int(match.group(1)) if match.group(1) else 6
        return f"timestamp {match.group(2)}", digits, 0
    return pg_type, 0, 0


def _widens(old: str, new: str) -> bool:
    if old == new:
        return True
    (fam_a, size_a, scale_a), (fam_b, size_b, scale_b) = _rank(old), _rank(new)
    unbounded = size_b == -1
    if fam_a == "integer" and fam_b == "integer":
        return size_b >= size_a
    if fam_a == "integer" and fam_b == "numeric":
        return unbounded or size_b - scale_b >= size_a
    if fam_a == fam_b == "numeric":
        if unbounded:
            return True
        return size_a != -1 and scale_b >= scale_a and size_b - scale_b >= size_a - scale_a
    if fam_a == fam_b == "text":
        return unbounded or (size_a != -1 and size_b >= size_a)
    if fam_a == fam_b == "float":
        return size_b >= size_a
    if fam_a.startswith("timestamp") and fam_b.startswith("timestamp"):
        return size_b >= size_a and not (fam_a.endswith("with") and fam_b.endswith("without"))
    return False


def type_change(old: str, new: str, *, time_zone: str | None, column: str) -> TypeChange:
    """Whether `ALTER COLUMN column TYPE new` (from `old`) widens the lake's column."""
    target = lake_type(new)
    if not _widens(old, new) or target is None:
        return TypeChange(
            False,
            None,
            f"column `{column}` changed type from `{old}` to `{new}`, which does not widen "
            "(its values may not convert exactly)",
        )
    return TypeChange(True, target, None, time_zone)

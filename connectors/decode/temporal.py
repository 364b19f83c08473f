"""Dates, times, timestamps and intervals from Debezium's JSON, with infinities told apart.

Postgres has `infinity` and `-infinity` for dates and timestamps, and a wider range than
Arrow's epoch integers reach at the top (timestamps to 294276 AD overflow int64
microseconds since 1970). Debezium spells the infinities differently on each path (seen on
real events, see docs/decoding.md):

| value | snapshot (JDBC) | streaming (pgoutput) |
|---|---|---|
| date +infinity | -622191234 days | -2147472692 days |
| date -infinity | -625821272 days | -2147472691 days |
| timestamp(4-6) ±infinity | 9223372036825200000 / -9223372036832400000 µs | same |
| timestamp(0-3) ±infinity | 9223372036825200 / -9223372036832400 ms | same |
| timestamptz ±infinity | `"infinity"` / `"-infinity"` | same |

and a timestamp beyond int64 comes out wrapped around (year 294276 arrives as
-9223372036853775810 µs). Every value Postgres can hold lies inside Postgres's own range
(4714-11-24 BC onwards), and all of these encodings lie outside it, so they cannot be
mistaken for a real value: the infinities become the extremes of the Arrow type
(`INFINITY_US`, `DATE_INFINITY`, ...), and any other number outside Postgres's range raises
`ValueError`, which makes the event a dead letter instead of a wrong value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

INFINITY_US: Final = 2**63 - 1
MINUS_INFINITY_US: Final = -(2**63) + 1
DATE_INFINITY: Final = 2**31 - 1
DATE_MINUS_INFINITY: Final = -(2**31)

# Postgres's own range: dates and timestamps start at 4714-11-24 BC (Julian day 0).
PG_FIRST_DAY: Final = -2_440_588
PG_LAST_DAY: Final = 2_145_042_905  # 5874897-12-31
PG_FIRST_US: Final = PG_FIRST_DAY * 86_400_000_000

_MICRO_INFINITIES: Final = {
    9223372036825200000: INFINITY_US,
    -9223372036832400000: MINUS_INFINITY_US,
}
_MILLI_INFINITIES: Final = {9223372036825200: INFINITY_US, -9223372036832400: MINUS_INFINITY_US}
# The snapshot's values come from a java.sql.Date of the driver's infinity (ms) turned into
# a local date, so the JVM's time zone can move them by a day: accept a small neighbourhood.
_DATE_NEAR: Final = ((-622_191_234, DATE_INFINITY), (-625_821_272, DATE_MINUS_INFINITY))
_DATE_EXACT: Final = {-2_147_472_692: DATE_INFINITY, -2_147_472_691: DATE_MINUS_INFINITY}


def _date_value(days: int) -> int:
    if PG_FIRST_DAY <= days <= PG_LAST_DAY:
        return days
    if days in _DATE_EXACT:
        return _DATE_EXACT[days]
    for near, meaning in _DATE_NEAR:
        if abs(days - near) <= 2:
            return meaning
    raise ValueError(f"date `{days}` (days since 1970) is outside Postgres's range")


def dates(values: Sequence[Any]) -> pa.Array:
    """Days since 1970 -> date32; the infinities become int32 max / min."""
    array = pa.array(values, type=pa.int32())
    bounds = pc.min_max(array)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (PG_FIRST_DAY <= low and high <= PG_LAST_DAY):
        return array.cast(pa.date32())
    fixed = [None if v is None else _date_value(v) for v in values]
    return pa.array(fixed, type=pa.int32()).cast(pa.date32())


def epoch_ints(factor: int, arrow: pa.DataType, *, timestamp: bool) -> Any:
    """A converter for integer epoch or clock values, rescaled by `factor` to the Arrow unit.

    For timestamps (`timestamp=True`) Debezium's infinity encodings (per unit, see the
    module docstring) become the int64 extremes, and any other value below Postgres's first
    instant or that overflows int64 when rescaled raises `ValueError`.
    """
    infinities = _MILLI_INFINITIES if factor == 1000 else _MICRO_INFINITIES
    first = PG_FIRST_US // factor

    def convert(values: Sequence[Any]) -> pa.Array:
        ints = pa.array(values, type=pa.int64())
        if timestamp and len(ints) and ints.null_count < len(ints):
            low = pc.min(ints).as_py()
            if low < first or (infinities.keys() & set(values)):
                return _with_infinities(values, factor, infinities, first).cast(arrow)
        if factor != 1:
            try:
                ints = pc.multiply_checked(ints, factor)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"a value of {arrow} overflows when rescaled: {exc}") from exc
        return ints.cast(arrow)

    return convert


def _with_infinities(
    values: Sequence[Any], factor: int, infinities: dict[int, int], first: int
) -> pa.Array:
    out: list[int | None] = []
    for value in values:
        if value is None:
            out.append(None)
        elif value in infinities:
            out.append(infinities[value])
        elif value < first:
            raise ValueError(
                f"timestamp `{value}` is outside Postgres's range (Debezium wraps timestamps "
                "after year 292277 around)"
            )
        else:
            scaled = value * factor
            if scaled >= INFINITY_US:
                raise ValueError(f"timestamp `{value}` overflows microseconds since 1970")
            out.append(scaled)
    return pa.array(out, type=pa.int64())


_ZONED_SPECIALS: Final = {"infinity": INFINITY_US, "-infinity": MINUS_INFINITY_US}


def zoned_timestamps(unit: str) -> Any:
    """ISO-8601 UTC strings -> timestamp[unit, UTC]; Arrow's parser refuses (never truncates)
    extra precision and years it cannot spell (`+10000-…`, BC), so those raise."""
    arrow = pa.timestamp(unit, tz="UTC")

    def convert(values: Sequence[Any]) -> pa.Array:
        if not any(v in _ZONED_SPECIALS for v in values if v is not None and len(v) < 10):
            return pa.array(values, type=pa.string()).cast(arrow)
        plain = [None if v in _ZONED_SPECIALS else v for v in values]
        parsed = pa.array(plain, type=pa.string()).cast(arrow).cast(pa.int64()).to_pylist()
        ints = [
            _ZONED_SPECIALS.get(v, p) if v is not None else None
            for v, p in zip(values, parsed, strict=True)
        ]
        return pa.array(ints, type=pa.int64()).cast(arrow)

    return convert


_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


def zoned_times(values: Sequence[Any]) -> pa.Array:
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


def intervals(values: Sequence[Any]) -> pa.Array:
    return pa.array(
        [None if v is None else parse_interval(v) for v in values],
        type=pa.month_day_nano_interval(),
    )

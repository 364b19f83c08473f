"""Arrow types Delta Lake can store, for the few exact types it cannot.

The decoder's Arrow types are exact (docs/decoding.md), but the Delta protocol has no time of
day, interval, duration or 256-bit decimal, and delta-rs silently cuts nanosecond timestamps
to microseconds. `Decoder(target="delta")` applies `delta_storable` to every batch, so the
core and the sinks only see types a Delta table takes, converted without losing a value
except where said:

- time64[us|ns] -> string `HH:MM:SS.ffffff[fff]` (fixed width, so it sorts; CAST AS TIME).
- month_day_nano_interval -> struct<months int32, days int32, nanoseconds int64>.
- duration[us|ns] -> int64 micro/nanoseconds.
- decimal256(p, s) -> string, the exact decimal text (CAST AS DECIMAL(p, s)).
- timestamp[ns] (SQL Server datetime2(7), datetimeoffset) -> timestamp[us]: the 100 ns digit
  is dropped (DESIGN §3.1 asks for microseconds; delta-rs would drop it silently anyway).

- Postgres +/-infinity (the int32/int64 extremes in the decoder's dates and timestamps)
  -> 9999-12-31 [23:59:59.999999] / 0001-01-01, the ends of the Delta range (the lake's
  sentinels): delta-rs cannot write the extremes. A real value at either end reads alike.
- Any other date or timestamp outside 0001-01-01 .. 9999-12-31 raises `ValueError` naming
  the value: the decoder makes its event a dead letter (delta-rs panics on such dates, and
  readers fail on their statistics), never a sentinel.

Lists and structs are converted element-wise.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_DATE_MAX, _DATE_MIN = 2_932_896, -719_162  # 9999-12-31, 0001-01-01 in epoch days
_US_MAX, _US_MIN = 253_402_300_799_999_999, -62_135_596_800_000_000
_EXTREMES = {
    "date": (2**31 - 1, -(2**31), _DATE_MAX, _DATE_MIN, pa.int32()),
    "us": (2**63 - 1, -(2**63) + 1, _US_MAX, _US_MIN, pa.int64()),
}
INTERVAL_STRUCT = pa.struct(
    [("months", pa.int32()), ("days", pa.int32()), ("nanoseconds", pa.int64())]
)


def delta_type(kind: pa.DataType) -> pa.DataType:
    """The Delta-storable type for an Arrow type (itself when Delta takes it)."""
    if pa.types.is_time(kind) or pa.types.is_decimal256(kind):
        return pa.string()
    if kind == pa.month_day_nano_interval():
        return INTERVAL_STRUCT
    if pa.types.is_duration(kind):
        return pa.int64()
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        return pa.timestamp("us", tz=kind.tz)
    if pa.types.is_list(kind):
        return pa.list_(delta_type(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, delta_type(f.type)) for f in kind])
    return kind


def _infinities(array: pa.Array) -> pa.Array:
    """Dates and timestamps: the +/-infinity extremes become the ends of the Delta range, and
    any other value outside that range raises `ValueError` (the event becomes a dead letter:
    Delta cannot hold it, and folding it into a sentinel would change it silently)."""
    kind = array.type
    if pa.types.is_date32(kind):
        top, bottom, new_top, new_bottom, raw = _EXTREMES["date"]
    elif pa.types.is_timestamp(kind) and kind.unit == "us":
        top, bottom, new_top, new_bottom, raw = _EXTREMES["us"]
    else:
        return array
    ints = array.cast(raw)
    bounds = pc.min_max(ints)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (new_bottom <= low and high <= new_top):
        return array
    infinite = pc.or_(pc.equal(ints, top), pc.equal(ints, bottom))
    outside = pc.or_(pc.less(ints, new_bottom), pc.greater(ints, new_top))
    bad = pc.filter(ints, pc.and_(outside, pc.invert(infinite)))
    if len(bad):
        raise ValueError(
            f"{_spelled(bad[0].as_py(), kind)} is outside what Delta can store (years 0001 to 9999)"
        )
    ints = pc.if_else(pc.equal(ints, top), pa.scalar(new_top, raw), ints)
    ints = pc.if_else(pc.equal(ints, bottom), pa.scalar(new_bottom, raw), ints)
    return ints.cast(kind)


def _spelled(value: int, kind: pa.DataType) -> str:
    """A date or timestamp integer as Postgres prints the day (years beyond Python's too)."""
    if pa.types.is_date32(kind):
        days, unit = value, "days"
    else:
        days, unit = value // 86_400_000_000, "µs"
    year, month, day = _civil(days)
    text = (
        f"{year:04d}-{month:02d}-{day:02d}"
        if year > 0
        else f"{1 - year:04d}-{month:02d}-{day:02d} BC"
    )
    return f"`{text}` ({value} {unit} since 1970)"


def _civil(days: int) -> tuple[int, int, int]:
    """(ISO year, month, day) of a day number since 1970, proleptic Gregorian (H. Hinnant)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _needs_work(kind: pa.DataType) -> bool:
    return (
        delta_type(kind) != kind
        or pa.types.is_date32(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_list(kind)
        or pa.types.is_struct(kind)
    )


def delta_array(array: pa.Array) -> pa.Array:
    """One array converted to `delta_type` of its type (and infinities to the range ends)."""
    kind = array.type
    target = delta_type(kind)
    if target == kind and not (pa.types.is_list(kind) or pa.types.is_struct(kind)):
        return _infinities(array)
    if pa.types.is_time(kind):
        return _time_text(array)
    if pa.types.is_decimal256(kind):
        return pa.array(
            [None if v is None else format(v, "f") for v in array.to_pylist()], type=pa.string()
        )
    if kind == pa.month_day_nano_interval():
        values = array.to_pylist()
        return pa.array(
            [
                None
                if v is None
                else {"months": v.months, "days": v.days, "nanoseconds": v.nanoseconds}
                for v in values
            ],
            type=INTERVAL_STRUCT,
        )
    if pa.types.is_duration(kind):
        return array.cast(pa.int64())
    if pa.types.is_timestamp(kind):
        return _infinities(pc.cast(array, target, safe=False))
    if pa.types.is_list(kind):
        mask = array.is_null() if array.null_count else None
        offsets = array.offsets
        values = delta_array(array.values)
        return pa.ListArray.from_arrays(offsets, values, type=target, mask=mask)
    if pa.types.is_struct(kind):
        children = [delta_array(child) for child in array.flatten()]  # parent offset applied
        mask = array.is_null() if array.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    raise TypeError(f"no Delta conversion for `{kind}`")  # pragma: no cover


def _time_text(array: pa.Array) -> pa.Array:
    """`HH:MM:SS.ffffff[fff]`; Postgres' 24:00:00 (one past Arrow's range) spelled out too."""
    digits = 9 if array.type.unit == "ns" else 6
    per_second = 10**digits
    ints = array.cast(pa.int64())
    top = pc.max(ints).as_py()
    if top is None or top < 86_400 * per_second:
        return array.cast(pa.string())
    out: list[str | None] = []
    for value in ints.to_pylist():
        if value is None:
            out.append(None)
            continue
        seconds, fraction = divmod(value, per_second)
        minutes, sec = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        out.append(f"{hours:02d}:{minute:02d}:{sec:02d}.{fraction:0{digits}d}")
    return pa.array(out, type=pa.string())


def delta_storable(table: pa.Table) -> pa.Table:
    """The table with every column in a Delta-storable type (see the module docstring)."""
    if not any(_needs_work(f.type) for f in table.schema):
        return table
    arrays = []
    fields = []
    for field, column in zip(table.schema, table.columns, strict=True):
        target = delta_type(field.type)
        if not _needs_work(field.type):
            arrays.append(column)
        else:
            try:
                converted = [delta_array(c) for c in column.chunks]
            except ValueError as exc:
                raise ValueError(f"column `{field.name}`: {exc}") from exc
            arrays.append(pa.chunked_array(converted, type=target))
        fields.append(pa.field(field.name, target, nullable=field.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

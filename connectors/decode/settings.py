"""Debezium connector settings that keep every value exact.

One place for the type-related properties, so the embedded engine, Kafka Connect
registration and the decoder agree on what the envelopes contain (docs/decoding.md).

- `decimal.handling.mode=string` (Postgres): NUMERIC/MONEY as their exact text, with the
  column's precision and scale beside it (`column.propagate.source.type`), so the decoder
  builds `decimal(p, s)` exactly and tells NaN and the infinities apart from NULL (the
  `precise` mode sends NULL for a numeric NaN). SQL Server keeps `precise` (its decimals have
  no NaN): Connect `Decimal`, unscaled bytes plus scale; the decoder reads both.
- `time.precision.mode=adaptive`: each column keeps its declared precision: millis for
  time(0-3)/timestamp(0-3), micros for (4-6), nanos for SQL Server time(7)/datetime2(7).
  `adaptive_time_microseconds` would truncate SQL Server time(7) to micros, and `connect`
  truncates everything to millis.
- `interval.handling.mode=string`: ISO-8601 `P1Y2M3DT4H5M6.78S` keeps months, days and
  micros apart; `numeric` folds months into approximate microseconds.
- `binary.handling.mode=bytes`: bytea/varbinary as base64 in JSON, decoded to bytes.
- `hstore.handling.mode=json`: hstore as a JSON object string.
- `include.unknown.datatypes=true`: a type Debezium has no mapping for (a composite type,
  box, circle, line, lseg, path, polygon, pg_lsn, ...) arrives as the bytes of its Postgres
  text form instead of being dropped from the row with a warning in Debezium's log; with
  the propagated source type the decoder keeps it as that text.
- `column.propagate.source.type=.*`: every field's schema carries the Postgres type name,
  length and scale (`__debezium.source.column.type`, ...).
- `converters=tidemark_arrays` (`tidemark.convert.PgArrayText`, in tidemark-bridge.jar):
  arrays whose elements Debezium drops or damages (interval, money, xml, bit, varbit,
  geometric types, enums holding NULL, numerics holding NaN, time and timetz) arrive as
  their elements' text; connectors/decode/pgtext.py types them again.
"""

from __future__ import annotations

from typing import Final

TYPE_SETTINGS: Final[dict[str, str]] = {
    "decimal.handling.mode": "string",
    "time.precision.mode": "adaptive",
    "interval.handling.mode": "string",
    "binary.handling.mode": "bytes",
    "hstore.handling.mode": "json",
    "include.unknown.datatypes": "true",
    "column.propagate.source.type": ".*",
    "converters": "tidemark_arrays",
    "tidemark_arrays.type": "tidemark.convert.PgArrayText",
}

# Debezium's default placeholder for values it cannot see (unchanged TOAST columns).
UNAVAILABLE_VALUE: Final = "__debezium_unavailable_value"

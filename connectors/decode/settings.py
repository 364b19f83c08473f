"""Debezium connector settings that keep every value exact.

One place for the type-related properties, so the embedded engine, Kafka Connect
registration and the decoder agree on what the envelopes contain (docs/decoding.md).

- `decimal.handling.mode=precise`: NUMERIC/DECIMAL/MONEY arrive as Connect `Decimal`
  (unscaled bytes + scale) or `VariableScaleDecimal` (scale + bytes); never a double.
- `time.precision.mode=adaptive`: each column keeps its declared precision: millis for
  time(0-3)/timestamp(0-3), micros for (4-6), nanos for SQL Server time(7)/datetime2(7).
  `adaptive_time_microseconds` would truncate SQL Server time(7) to micros, and `connect`
  truncates everything to millis.
- `interval.handling.mode=string`: ISO-8601 `P1Y2M3DT4H5M6.78S` keeps months, days and
  micros apart; `numeric` folds months into approximate microseconds.
- `binary.handling.mode=bytes`: bytea/varbinary as base64 in JSON, decoded to bytes.
- `hstore.handling.mode=json`: hstore as a JSON object string.
"""

from __future__ import annotations

from typing import Final

TYPE_SETTINGS: Final[dict[str, str]] = {
    "decimal.handling.mode": "precise",
    "time.precision.mode": "adaptive",
    "interval.handling.mode": "string",
    "binary.handling.mode": "bytes",
    "hstore.handling.mode": "json",
    "include.unknown.datatypes": "false",
}

# Debezium's default placeholder for values it cannot see (unchanged TOAST columns).
UNAVAILABLE_VALUE: Final = "__debezium_unavailable_value"

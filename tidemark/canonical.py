"""One canonical text per value, computed alike in Postgres and in DuckDB, for row hashes.

`tidemark verify` hashes every row on both sides and compares the hashes by key, so the two
SQL dialects must agree on each value's text exactly:
  integers, booleans, text, uuid, enums, json  their text form
  numeric        trailing fractional zeros removed (`trim_scale`): 12.50 -> 12.5
  float          the shortest text that round-trips
  timestamp(tz)  microseconds since the epoch (time zones and formats cannot differ)
  date           days since 1970-01-01;  time  microseconds since midnight
  bytea          lowercase hex;  char(n)  trailing blanks removed;  arrays  JSON
Each field is encoded `N` (NULL) or `V<bytes>:<text>`, so NULL differs from '' and
concatenations cannot collide. The row hash is md5 over the fields in column order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "int",
    "numeric",
    "float",
    "bool",
    "timestamp",
    "date",
    "time",
    "bytes",
    "bpchar",
    "array",
    "text",
]

_BY_TYPE: dict[str, Kind] = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "oid": "int",
    "numeric": "numeric",
    "float4": "float",
    "float8": "float",
    "bool": "bool",
    "timestamptz": "timestamp",
    "timestamp": "timestamp",
    "date": "date",
    "time": "time",
    "bytea": "bytes",
    "bpchar": "bpchar",
}


@dataclass(frozen=True)
class Column:
    """A source column: its name, Postgres type name and canonical kind."""

    name: str
    pg_type: str
    kind: Kind


def kind_of(pg_type: str, category: str) -> Kind:
    """The canonical kind of a Postgres type (`pg_type.typname`, `typcategory`)."""
    if category == "A":
        return "array"
    return _BY_TYPE.get(pg_type, "text")


def ident(name: str) -> str:
    """A double-quoted identifier (same rules in Postgres and DuckDB)."""
    return '"' + name.replace('"', '""') + '"'


def _pg_text(column: Column) -> str:
    x = ident(column.name)
    return {
        "int": f"{x}::text",
        "numeric": f"trim_scale({x})::text",
        "float": f"{x}::text",
        "bool": f"{x}::text",
        "timestamp": f"(extract(epoch from {x}) * 1000000)::numeric(38,0)::text",
        "date": f"({x} - date '1970-01-01')::text",
        "time": f"(extract(epoch from {x}) * 1000000)::numeric(38,0)::text",
        "bytes": f"encode({x}, 'hex')",
        "bpchar": f"rtrim({x}::text)",
        "array": f"array_to_json({x})::text",
        "text": f"{x}::text",
    }[column.kind]


def _duck_text(column: Column, lake_type: str | None) -> str | None:
    """DuckDB text of a lake column given its DuckDB type; None when the lake lacks it."""
    if lake_type is None:
        return None
    x = ident(column.name)
    t = lake_type.upper()
    is_temporal = t.startswith(("TIMESTAMP", "DATE", "TIME"))
    if column.kind == "numeric":
        s = f"CAST({x} AS VARCHAR)"
        return f"(CASE WHEN {s} LIKE '%.%' THEN rtrim(rtrim({s}, '0'), '.') ELSE {s} END)"
    if column.kind == "timestamp" and is_temporal:
        return f"CAST(epoch_us(CAST({x} AS TIMESTAMPTZ)) AS VARCHAR)"
    if column.kind == "timestamp" and t == "VARCHAR":
        return f"CAST(epoch_us(CAST({x} AS TIMESTAMPTZ)) AS VARCHAR)"
    if column.kind == "date" and is_temporal:
        return f"CAST(datediff('day', DATE '1970-01-01', CAST({x} AS DATE)) AS VARCHAR)"
    if column.kind == "time" and t.startswith("TIME"):
        return f"CAST(datediff('microsecond', TIME '00:00:00', CAST({x} AS TIME)) AS VARCHAR)"
    if column.kind == "bytes" and t == "BLOB":
        return f"lower(hex({x}))"
    if column.kind == "bpchar":
        return f"rtrim(CAST({x} AS VARCHAR))"
    if column.kind == "array" and t.endswith("[]"):
        return f"CAST(to_json({x}) AS VARCHAR)"
    if column.kind == "bool" and t == "BOOLEAN":
        return f"CAST({x} AS VARCHAR)"
    return f"CAST({x} AS VARCHAR)"


def _pg_field(column: Column) -> str:
    t = _pg_text(column)
    return (
        f"(CASE WHEN {ident(column.name)} IS NULL THEN 'N' "
        f"ELSE 'V' || octet_length({t})::text || ':' || {t} END)"
    )


def _duck_field(column: Column, lake_type: str | None) -> str:
    t = _duck_text(column, lake_type)
    if t is None:
        return "'N'"
    return (
        f"(CASE WHEN {ident(column.name)} IS NULL THEN 'N' "
        f"ELSE 'V' || CAST(strlen({t}) AS VARCHAR) || ':' || {t} END)"
    )


def postgres_rows(table: str, columns: Sequence[Column], keys: Sequence[str]) -> str:
    """SELECT (key text, row md5) over a source table, `schema.table`."""
    schema, name = table.split(".", 1)
    by_name = {c.name: c for c in columns}
    key = " || ".join(_pg_field(by_name[k]) for k in keys)
    row = " || ".join(_pg_field(c) for c in columns)
    return f"SELECT {key} AS k, md5({row}) AS h FROM {ident(schema)}.{ident(name)}"


def duckdb_rows(
    relation: str, columns: Sequence[Column], keys: Sequence[str], lake_types: dict[str, str]
) -> str:
    """SELECT (key text, row md5) over a DuckDB relation holding lake rows."""
    by_name = {c.name: c for c in columns}
    key = " || ".join(_duck_field(by_name[k], lake_types.get(k)) for k in keys)
    row = " || ".join(_duck_field(c, lake_types.get(c.name)) for c in columns)
    return f"SELECT {key} AS k, md5({row}) AS h FROM {relation}"


_FIELD = re.compile(r"N|V(\d+):")


def decode_key(text: str) -> tuple[str | None, ...]:
    """The key values back from an encoded key text, for reports."""
    values: list[str | None] = []
    data = text.encode()
    at = 0
    while at < len(data):
        match = _FIELD.match(data[at:].decode(errors="replace"))
        if match is None:
            break
        if match.group(0) == "N":
            values.append(None)
            at += 1
            continue
        size = int(match.group(1))
        start = at + len(match.group(0))
        values.append(data[start : start + size].decode(errors="replace"))
        at = start + size
    return tuple(values)

"""One canonical text per value, computed alike in Postgres and in DuckDB, for row hashes.

`tidemark verify` hashes every row on both sides and compares the hashes by key, so the two
SQL dialects must agree on each value's text exactly, for every type the decoder emits as
the lake stores it (docs/decoding.md), and never call equal values different:
  integers, booleans, text, uuid, enums, json, ranges, composites  their text form
  numeric, money  trailing fractional zeros removed: 12.50 -> 12.5; NaN, Infinity as words
  float           sign, significant digits and exponent of the shortest text that round-trips
                  (Postgres writes 1e+15, DuckDB 1000000000000000.0: both `1e16`); NaN, ±Infinity
  timestamp(tz)   microseconds since the epoch; ±infinity as the lake's sentinels
  date            days since 1970-01-01; ±infinity as the lake's sentinels
  time, timetz    microseconds since midnight (timetz in UTC, as Debezium sends it)
  interval        months, days, nanoseconds
  bytea           lowercase hex;  char(n)  trailing blanks removed
  bit(1)          true/false;  bit(n), varbit  the bits without leading zeros
  point           x and y as floats;  box, circle, line, lseg, path, polygon  their numbers
  hstore          its pairs in key order
  arrays          each element as above, NULLs kept, in order
Each field is encoded `N` (NULL) or `V<length>:<text>`, so NULL differs from '' and
concatenations cannot collide. The row hash is md5 over the fields in column order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb

Kind = Literal[
    "int",
    "numeric",
    "float4",
    "float8",
    "bool",
    "timestamp",
    "date",
    "time",
    "timetz",
    "interval",
    "bytes",
    "bpchar",
    "bit1",
    "bits",
    "point",
    "geometric",
    "hstore",
    "array",
    "text",
]

_BY_TYPE: dict[str, Kind] = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "oid": "int",
    "numeric": "numeric",
    "money": "numeric",
    "float4": "float4",
    "float8": "float8",
    "bool": "bool",
    "timestamptz": "timestamp",
    "timestamp": "timestamp",
    "date": "date",
    "time": "time",
    "timetz": "timetz",
    "interval": "interval",
    "bytea": "bytes",
    "bpchar": "bpchar",
    "varbit": "bits",
    "point": "point",
    "box": "geometric",
    "circle": "geometric",
    "line": "geometric",
    "lseg": "geometric",
    "path": "geometric",
    "polygon": "geometric",
    "hstore": "hstore",
}
# The lake's ±infinity sentinels (connectors/decode/storable.py): 9999-12-31 [23:59:59.999999]
# and 0001-01-01, in days and in microseconds since 1970.
_DAYS = ("2932896", "-719162")
_MICROS = ("253402300799999999", "-62135596800000000")
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|-?Infinity|NaN"


@dataclass(frozen=True)
class Column:
    """A source column: its name, Postgres type name and canonical kind.

    Attributes:
        element: for an array, the kind of its elements.
        mod: the type modifier (`atttypmod`; the length of a bit(n)).
    """

    name: str
    pg_type: str
    kind: Kind
    element: Kind | None = None
    mod: int = -1


def kind_of(pg_type: str, category: str, mod: int = -1) -> Kind:
    """The canonical kind of a Postgres type (`pg_type.typname`, `typcategory`)."""
    if category == "A":
        return "array"
    if pg_type in ("bit", "varbit"):
        return "bit1" if mod == 1 else "bits"  # Debezium sends a one-bit string as a boolean
    return _BY_TYPE.get(pg_type, "text")


def ident(name: str) -> str:
    """A double-quoted identifier (same rules in Postgres and DuckDB)."""
    return '"' + name.replace('"', '""') + '"'


# -- Postgres ------------------------------------------------------------------------------
def _pg_float(x: str, cast: str) -> str:
    """Sign, digits and exponent of Postgres's shortest text of a float (see the docstring)."""
    return f"""(SELECT CASE WHEN t IN ('NaN', 'Infinity', '-Infinity') THEN t
                WHEN v = 0 THEN '0'
                ELSE s || rtrim(ltrim(d, '0'), '0') || 'e'
                     || (length(ip) + ex - (length(d) - length(ltrim(d, '0'))))::text END
        FROM (SELECT t, v, CASE WHEN v < 0 THEN '-' ELSE '' END AS s,
                     split_part(split_part(ltrim(t, '-'), 'e', 1), '.', 1) AS ip,
                     replace(split_part(ltrim(t, '-'), 'e', 1), '.', '') AS d,
                     CASE WHEN strpos(t, 'e') > 0 THEN split_part(t, 'e', 2)::int ELSE 0 END
                       AS ex
              FROM (SELECT ({x})::{cast}::text AS t, ({x})::float8 AS v) a) b)"""


def _pg_scalar(kind: Kind, x: str) -> str:
    finite_ts = "(extract(epoch from {x}) * 1000000)::numeric(38,0)::text"
    if kind == "timestamp":
        return (
            f"(CASE WHEN isfinite({x}) THEN {finite_ts.format(x=x)} "
            f"WHEN {x} > 'epoch' THEN '{_MICROS[0]}' ELSE '{_MICROS[1]}' END)"
        )
    if kind == "date":
        return (
            f"(CASE WHEN isfinite({x}) THEN ({x} - date '1970-01-01')::text "
            f"WHEN {x} > 'epoch'::date THEN '{_DAYS[0]}' ELSE '{_DAYS[1]}' END)"
        )
    if kind in ("float4", "float8"):
        return _pg_float(x, kind)
    if kind == "point":
        return f"({_pg_float(f'({x})[0]', 'float8')} || ',' || {_pg_float(f'({x})[1]', 'float8')})"
    if kind == "geometric":
        return (
            f"(SELECT coalesce(string_agg({_pg_float('m[1]', 'float8')}, ',' ORDER BY o), '') "
            f"FROM regexp_matches(({x})::text, '{_NUMBER}', 'g') WITH ORDINALITY r(m, o))"
        )
    if kind == "hstore":
        pair = f"{_pg_field('text', 'key')} || {_pg_field('text', 'value')}"
        ordered = 'ORDER BY key COLLATE "C"'
        return f"(SELECT coalesce(string_agg({pair}, '' {ordered}), '') FROM each({x}))"
    if kind == "interval":
        return (
            f"((extract(year from {x}) * 12 + extract(month from {x}))::bigint::text || ',' || "
            f"extract(day from {x})::bigint::text || ',' || "
            f"((extract(hour from {x}) * 3600000000 + extract(minute from {x}) * 60000000 "
            f"+ extract(microseconds from {x})) * 1000)::numeric(38,0)::text)"
        )
    return {
        "int": f"{x}::text",
        "numeric": f"trim_scale(({x})::numeric)::text",
        "bool": f"{x}::text",
        "time": f"(extract(epoch from {x}) * 1000000)::numeric(38,0)::text",
        "timetz": (
            f"(((extract(epoch from ({x} AT TIME ZONE 'UTC')::time) * 1000000)::numeric(38,0))"
            " % 86400000000)::text"
        ),
        "bytes": f"encode({x}, 'hex')",
        "bpchar": f"rtrim({x}::text)",
        "bit1": f"(CASE WHEN {x} = B'1' THEN 'true' ELSE 'false' END)",
        "bits": f"ltrim({x}::text, '0')",
        # The type's output function, as Debezium reads it (`::text` of an inet adds /32).
        "text": f"format('%s', {x})",
    }[kind]


def _element(kind: Kind | None) -> Kind:
    """The kind an array's elements are compared as. Arrays arrive as their elements' text
    (connectors/decode/pgtext.py): bits and geometric values stay exactly that text."""
    if kind is None or kind in ("bit1", "bits", "point", "geometric"):
        return "text"
    return kind


def _pg_text(column: Column) -> str:
    x = ident(column.name)
    if column.kind == "array":
        # By subscript: `unnest` of an array of a composite type would expand its fields.
        element = _pg_field(_element(column.element), f"{x}[i]")
        return (
            f"(SELECT '[' || coalesce(string_agg({element}, ',' ORDER BY i), '') || ']' "
            f"FROM generate_subscripts({x}, 1) AS g(i))"
        )
    return _pg_scalar(column.kind, x)


def _pg_field(kind: Kind, x: str) -> str:
    t = _pg_scalar(kind, x)
    return f"(CASE WHEN {x} IS NULL THEN 'N' ELSE 'V' || octet_length({t})::text || ':' || {t} END)"


def _pg_column_field(column: Column) -> str:
    t = _pg_text(column)
    x = ident(column.name)
    return f"(CASE WHEN {x} IS NULL THEN 'N' ELSE 'V' || octet_length({t})::text || ':' || {t} END)"


def postgres_rows(
    table: str, columns: Sequence[Column], keys: Sequence[str], *, counted: bool = False
) -> str:
    """SELECT (key text, row md5) over a source table (`"schema"."table"`, quoted).

    `counted` (a table without a key): one row per distinct row image, its md5 the key and
    the number of identical rows the value.
    """
    row = " || ".join(_pg_column_field(c) for c in columns)
    if counted:
        return f"SELECT md5({row}) AS k, count(*)::text AS h FROM {table} GROUP BY 1"
    by_name = {c.name: c for c in columns}
    key = " || ".join(_pg_column_field(by_name[k]) for k in keys)
    return f"SELECT {key} AS k, md5({row}) AS h FROM {table}"


# -- DuckDB --------------------------------------------------------------------------------
_MACROS = f"""
CREATE OR REPLACE MACRO tm_float(t) AS CASE
  WHEN t IN ('nan', '-nan', 'NaN') THEN 'NaN'
  WHEN t IN ('inf', 'Infinity') THEN 'Infinity'
  WHEN t IN ('-inf', '-Infinity') THEN '-Infinity'
  WHEN ltrim(replace(split_part(ltrim(t, '-'), 'e', 1), '.', ''), '0') = '' THEN '0'
  ELSE (CASE WHEN t LIKE '-%' THEN '-' ELSE '' END)
       || rtrim(ltrim(replace(split_part(ltrim(t, '-'), 'e', 1), '.', ''), '0'), '0') || 'e'
       || CAST(length(split_part(split_part(ltrim(t, '-'), 'e', 1), '.', 1))
               + (CASE WHEN strpos(t, 'e') > 0 THEN CAST(split_part(t, 'e', 2) AS INTEGER)
                  ELSE 0 END)
               - (length(replace(split_part(ltrim(t, '-'), 'e', 1), '.', ''))
                  - length(ltrim(replace(split_part(ltrim(t, '-'), 'e', 1), '.', ''), '0')))
               AS VARCHAR)
  END;
CREATE OR REPLACE MACRO tm_decimal(s) AS
  CASE WHEN s LIKE '%.%' THEN rtrim(rtrim(s, '0'), '.') ELSE s END;
CREATE OR REPLACE MACRO tm_clock(t) AS CAST(
  CAST(substr(t, 1, 2) AS BIGINT) * 3600000000 + CAST(substr(t, 4, 2) AS BIGINT) * 60000000
  + CAST(substr(t, 7, 2) AS BIGINT) * 1000000
  + CAST(rpad(coalesce(nullif(substr(t, 10, 6), ''), '0'), 6, '0') AS BIGINT) AS VARCHAR);
CREATE OR REPLACE MACRO tm_bits(b) AS CASE WHEN octet_length(b) = 0 THEN '' ELSE
  ltrim(array_to_string(list_transform(
    string_split(array_to_string(list_reverse(regexp_extract_all(hex(b), '..')), ''), ''),
    lambda c: lpad(bin(CAST('0x' || c AS INTEGER)), 4, '0')), ''), '0') END;
CREATE OR REPLACE MACRO tm_field(t) AS
  CASE WHEN t IS NULL THEN 'N' ELSE 'V' || CAST(strlen(t) AS VARCHAR) || ':' || t END;
CREATE OR REPLACE MACRO tm_numbers(s) AS coalesce(array_to_string(list_transform(
  regexp_extract_all(s, '{_NUMBER}'), lambda n: tm_float(CAST(CAST(n AS DOUBLE) AS VARCHAR))),
  ','), '');
"""


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define the DuckDB macros `duckdb_rows` uses (once per connection)."""
    con.execute(_MACROS)


def _duck_scalar(kind: Kind, x: str, lake_type: str) -> str:
    t = lake_type.upper()
    text = f"CAST({x} AS VARCHAR)"
    if kind == "numeric":
        return f"tm_decimal({text})"
    if kind in ("float4", "float8"):
        return f"tm_float({text})"
    if kind == "timestamp":
        return f"CAST(epoch_us(CAST({x} AS TIMESTAMPTZ)) AS VARCHAR)"
    if kind == "date":
        return f"CAST(datediff('day', DATE '1970-01-01', CAST({x} AS DATE)) AS VARCHAR)"
    if kind in ("time", "timetz"):
        if t in ("BIGINT", "INTEGER"):  # microseconds since midnight already
            return text
        if t.startswith("TIME"):
            return f"CAST(datediff('microsecond', TIME '00:00:00', CAST({x} AS TIME)) AS VARCHAR)"
        return f"tm_clock({text})"
    if kind == "interval" and t.startswith("STRUCT"):
        return (
            f"(CAST({x}.months AS VARCHAR) || ',' || CAST({x}.days AS VARCHAR) || ','"
            f" || CAST({x}.nanoseconds AS VARCHAR))"
        )
    if kind == "bytes" and t == "BLOB":
        return f"lower(hex({x}))"
    if kind == "bits" and t == "BLOB":
        return f"tm_bits({x})"
    if kind == "bpchar":
        return f"rtrim({text})"
    if kind == "point" and t.startswith("STRUCT"):
        return f"(tm_float(CAST({x}.x AS VARCHAR)) || ',' || tm_float(CAST({x}.y AS VARCHAR)))"
    if kind == "geometric":
        return f"tm_numbers({text})"
    if kind == "hstore":
        entries = f"map_entries(json_transform({x}, '\"MAP(VARCHAR, VARCHAR)\"'))"
        return (
            f"coalesce(array_to_string(list_transform(list_sort({entries}), "
            "lambda p: tm_field(p.key) || tm_field(p.value)), ''), '')"
        )
    return text


def _element_type(lake_type: str) -> str:
    return lake_type[:-2] if lake_type.endswith("[]") else lake_type


def _duck_text(column: Column, lake_type: str | None) -> str | None:
    """DuckDB text of a lake column given its DuckDB type; None when the lake lacks it."""
    if lake_type is None:
        return None
    x = ident(column.name)
    if column.kind == "array" and lake_type.endswith("[]"):
        element = _duck_scalar(_element(column.element), "e", _element_type(lake_type))
        # coalesce: DuckDB 1.4 joins an empty list into NULL, not ''
        return (
            f"('[' || coalesce(array_to_string(list_transform({x}, lambda e: CASE WHEN e IS "
            f"NULL THEN 'N' ELSE tm_field({element}) END), ','), '') || ']')"
        )
    return _duck_scalar(column.kind, x, lake_type)


def _duck_field(column: Column, lake_type: str | None) -> str:
    t = _duck_text(column, lake_type)
    if t is None:
        return "'N'"
    return f"(CASE WHEN {ident(column.name)} IS NULL THEN 'N' ELSE tm_field({t}) END)"


def duckdb_rows(
    relation: str,
    columns: Sequence[Column],
    keys: Sequence[str],
    lake_types: dict[str, str],
    *,
    count: str | None = None,
) -> str:
    """SELECT (key text, row md5) over a DuckDB relation holding lake rows.

    `count` (a table without a key): the column holding how many identical rows each lake
    row stands for; rows are grouped by their md5 (the key), the value is the total count.
    """
    row = " || ".join(_duck_field(c, lake_types.get(c.name)) for c in columns)
    if count is not None:
        return (
            f"SELECT md5({row}) AS k, CAST(sum({ident(count)}) AS VARCHAR) AS h "
            f"FROM {relation} GROUP BY 1"
        )
    by_name = {c.name: c for c in columns}
    key = " || ".join(_duck_field(by_name[k], lake_types.get(k)) for k in keys)
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

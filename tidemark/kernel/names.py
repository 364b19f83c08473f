"""Source table names: how the config writes them, how the lake names them, where they live.

A source table is a (schema, table) pair of Postgres identifiers, which may hold any
character: `"Sales"."Order Items"`. Three spellings, defined once here:
- the config's `schema.table`: each part bare (`public.customers`, case kept as written) or
  double-quoted with `""` for a quote inside (`"Sales"."Order Items"`, `public."a.b"`).
  `config_name` writes the canonical form: a part is quoted only when it needs it.
- the topic `<source>.<schema>.<table>` Debezium writes to: each character a topic cannot
  hold becomes `_` (`shop.Sales.Order_Items`), as Debezium's topic naming does;
- the lake table name `<source>.<schema>.<table>`: the parts as they are, joined by dots
  (`shop.Sales.Order Items`), as the decoder builds it from Debezium's `source` block.
- the directory of a lake table under `<lake>/<layer>/`: the lake table name with every
  character outside `A-Z a-z 0-9 _ . - $` written `~XX` (its UTF-8 bytes in hex, `~` itself
  too): `shop.Sales.Order~20Items`. delta-rs decodes `%XX` in paths, and spaces, quotes or
  slashes are not safe in every object store URL, so this escape is our own.
"""

from __future__ import annotations

import re
from typing import Final

_SIMPLE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_LOWER: Final = re.compile(r"^[a-z_][a-z0-9_$]*$")
_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-$")
_ESCAPED: Final = re.compile(r"~([0-9A-F]{2})")
_TOPIC_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


def _part(text: str, at: int) -> tuple[str, int]:
    """One identifier starting at `at`: (its value, the index after it)."""
    if text.startswith('"', at):
        out: list[str] = []
        i = at + 1
        while i < len(text):
            if text[i] == '"':
                if text.startswith('""', i):
                    out.append('"')
                    i += 2
                    continue
                if not out:
                    raise ValueError("an empty quoted name")
                return "".join(out), i + 1
            out.append(text[i])
            i += 1
        raise ValueError("a quoted name is not closed")
    end = text.find(".", at)
    end = len(text) if end < 0 else end
    value = text[at:end]
    if not value or value != value.strip() or '"' in value:
        raise ValueError("a bare part holds no quote, dot or edge space")
    return value, end


def split_table(name: str) -> tuple[str, str]:
    """(schema, table) of a config table name `schema.table`.

    Raises:
        ValueError: not two parts, an unclosed or empty quoted part, a stray quote.
    """
    schema, at = _part(name, 0)
    if not name.startswith(".", at):
        raise ValueError("it has one part")
    table, end = _part(name, at + 1)
    if end != len(name):
        raise ValueError("it has more than two parts")
    return schema, table


def quote(part: str) -> str:
    """A part as a double-quoted identifier (Postgres, DuckDB and the config agree)."""
    return '"' + part.replace('"', '""') + '"'


def config_name(schema: str, table: str) -> str:
    """The canonical config spelling: each part bare when it is a plain identifier."""
    return ".".join(p if _SIMPLE.match(p) else quote(p) for p in (schema, table))


def sql_name(schema: str, table: str) -> str:
    """`"schema"."table"` for SQL."""
    return f"{quote(schema)}.{quote(table)}"


def shown_sql_name(schema: str, table: str) -> str:
    """The name for SQL a person types (hints): each part quoted only when Postgres would
    otherwise fold or misread it (`public.orders`, `"Sales"."Order Items"`)."""
    return ".".join(p if _LOWER.match(p) else quote(p) for p in (schema, table))


def lake_name(source: str, schema: str, table: str) -> str:
    """The lake table name `<source>.<schema>.<table>`."""
    return f"{source}.{schema}.{table}"


def path_segment(lake_table: str) -> str:
    """The directory name of a lake table (see the module docstring)."""
    if all(c in _SAFE for c in lake_table):
        return lake_table
    return "".join(
        c if c in _SAFE else "".join(f"~{b:02X}" for b in c.encode()) for c in lake_table
    )


def topic_part(part: str) -> str:
    """A name part as Debezium writes it in a topic name: every character a Kafka topic
    cannot hold (anything but ASCII letters, digits, `.`, `_`, `-`) becomes `_`."""
    return _TOPIC_UNSAFE.sub("_", part)


def location(root: str, *parts: str) -> str:
    """`root/part/...`: a local root made absolute, each part escaped by `path_segment`."""
    import os

    base = root if "://" in root else os.path.abspath(root)
    return "/".join([base.rstrip("/"), *(path_segment(p) for p in parts)])


def from_path_segment(segment: str) -> str:
    """The lake table name of a directory written by `path_segment`."""
    if "~" not in segment:
        return segment
    out = bytearray()
    at = 0
    for match in _ESCAPED.finditer(segment):
        out += segment[at : match.start()].encode()
        out.append(int(match.group(1), 16))
        at = match.end()
    out += segment[at:].encode()
    return out.decode(errors="replace")

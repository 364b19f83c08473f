"""A dialect-neutral description of the simulator's tables.

Profiles declare their tables with these types; `dialects.py` renders them as Postgres or
T-SQL DDL. Every table gets a bigint identity key `id` and a `modified_at` timestamp, so the
shape the capture side sees is the same for both sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["key", "ref", "text", "code", "money", "rate", "int", "bool", "date", "ts"]


@dataclass(frozen=True)
class Column:
    """One column.

    Args:
        name: column name.
        type: neutral type: `key` (bigint identity), `ref` (bigint FK to `references`), `text`
            (unicode, up to `length`), `code` (short ASCII code), `money` (numeric(18,2)),
            `rate` (numeric(7,4)), `int`, `bool`, `date`, `ts` (timestamp with time zone).
        nullable: whether NULL is allowed.
        length: maximum length for `text`/`code`.
        references: parent table for `ref` columns.
        default_now: default to the current time (for `ts`).
        choices: allowed values (rendered as a CHECK constraint).
    """

    name: str
    type: ColumnType
    nullable: bool = False
    length: int = 200
    references: str | None = None
    default_now: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A table: `id` key first, `modified_at` last, plus optional unique columns."""

    name: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = field(default=())

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def references(self) -> list[Column]:
        return [col for col in self.columns if col.type == "ref"]


def table(name: str, *columns: Column, unique: tuple[str, ...] = ()) -> Table:
    """Build a table with the standard `id` key and `modified_at` column around `columns`."""
    return Table(
        name,
        (Column("id", "key"), *columns, Column("modified_at", "ts", default_now=True)),
        unique,
    )

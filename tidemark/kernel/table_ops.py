"""Changes to a whole table that no row event describes: DDL and TRUNCATE.

A source emits them in its change stream, in order with the rows (Postgres: Tidemark's event
trigger writes one logical-decoding message per change, docs/schema-changes.md; TRUNCATE
comes as Debezium's op `t`). The decoder turns each into a `TableOp`; the batcher carries it
at its position; the runtime applies it to the lake between the rows before and after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OpKind = Literal[
    "truncate",
    "drop_table",
    "create_table",
    "rename_table",
    "add_column",
    "drop_column",
    "rename_column",
    "alter_type",
    "attach_partition",
    "detach_partition",
    "drop_partition",
    "snapshot",
    "rows",
]
KINDS: tuple[OpKind, ...] = OpKind.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TableOp:
    """One table-wide change, at its place in the source's order.

    Attributes:
        table: lake table name `<source>.<schema>.<table>`.
        kind: what happened (see `OpKind`).
        position: source position, comparable with the events' `_tm_position`.
        tx_id: the source transaction (None outside one).
        source_ts: commit time, microseconds since the epoch (UTC).
        details: kind-specific facts: column names, Postgres types, fill values, rows.
        ddl: the statement that made it (shortened), for reasons and the schema log.
    """

    table: str
    kind: OpKind
    position: str
    tx_id: str | None
    source_ts: int | None
    details: dict[str, Any] = field(default_factory=dict)
    ddl: str | None = None

    def describe(self) -> str:
        """One line for logs and dead-letter reasons: the kind and the statement."""
        statement = " ".join((self.ddl or "").split())
        if len(statement) > 160:
            statement = statement[:157] + "..."
        return f"{self.kind} (`{statement}`)" if statement else self.kind

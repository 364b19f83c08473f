"""Test helpers for the batcher: a fake clock and decoded chunks in the decoder's shape."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from tidemark.kernel.columns import OP, POSITION, TX_ID
from tidemark.kernel.model import TableChanges


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Marker:
    status: str
    tx_id: str
    position: str | None = None


@dataclass(frozen=True)
class Decoded:
    changes: dict[str, TableChanges]
    transactions: list[Marker] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    last_position: str | None = None
    ops: list = field(default_factory=list)


def p(i: int) -> str:
    return f"{i:08x}"


def chunk(*events: tuple[str, int, str | None], markers=(), letters=(), last=None) -> Decoded:
    """Events as (table, position, tx); each table gets an `id` = position."""
    by_table: dict[str, list[tuple[int, str | None]]] = {}
    for table, position, tx in events:
        by_table.setdefault(table, []).append((position, tx))
    changes = {
        table: TableChanges(
            table,
            ("id",),
            pa.table(
                {
                    "id": pa.array([pos for pos, _ in rows], pa.int64()),
                    OP: ["c"] * len(rows),
                    POSITION: [p(pos) for pos, _ in rows],
                    TX_ID: pa.array([tx for _, tx in rows], pa.string()),
                }
            ),
        )
        for table, rows in by_table.items()
    }
    positions = [e[1] for e in events]
    return Decoded(
        changes,
        list(markers),
        list(letters),
        last if last is not None else (p(max(positions)) if positions else None),
    )


def ids(batch, table="s.public.a") -> list[int]:
    return batch.changes[table].events.column("id").to_pylist() if table in batch.changes else []


def tx(tx_id: str, *positions: int, table: str = "s.public.a"):
    return [(table, i, tx_id) for i in positions]

"""What a profile is: its tables, its reference data and its weighted operations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tidemark.simulator.engine import Tx
from tidemark.simulator.schema import Table

OpKind = Literal["insert", "update", "delete"]
# (unique column, columns, rows) of one reference table
Reference = tuple[str, tuple[str, ...], Sequence[Sequence[Any]]]


@dataclass(frozen=True)
class Operation:
    """A business operation (e.g. "post card payments"): one or more statements in a `Tx`.

    It must keep every foreign key valid and every profile invariant true when the
    transaction commits, and stay within `tx.remaining` row changes.
    """

    kind: OpKind
    name: str
    weight: float
    run: Callable[[Tx], None]


@dataclass(frozen=True)
class Profile:
    """A schema plus the operations that change it.

    Args:
        name: the `--profile` value.
        tables: in creation order (parents before children).
        operations: the weighted mix within each kind.
        reference: builds the rows of reference tables, inserted once by `setup`
            (insert-if-absent on a unique column); deterministic, independent of `--seed`.
    """

    name: str
    tables: tuple[Table, ...]
    operations: tuple[Operation, ...]
    reference: Callable[[], dict[str, Reference]] = field(default=lambda: {})

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

"""A batch with table-wide changes, cut into steps the lake applies one after another.

A DDL or TRUNCATE (`TableOp`) must meet the lake exactly as the rows before it left it, and
the rows after it must meet the changed table. So a batch holding ops is applied as steps in
source order: the events before the first op, the op, the events up to the next op, and so
on, each step committed under its own batch id (the batcher reserves them). Consecutive
`rows` messages of one change (the values of a filled column, the keys of a detached
partition) form one step. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION
from tidemark.kernel.model import TableChanges
from tidemark.kernel.table_ops import TableOp


@dataclass(frozen=True)
class Step:
    """One thing to commit: a stretch of events, or one change (with its `rows` messages).

    Attributes:
        batch_id: the id it is committed under.
        changes: the events of this stretch per lake table (empty for an op step).
        ops: the op and the `rows` messages that belong to it (empty for events).
        positions: per source, the highest position the step covers (for the batch log).
    """

    batch_id: int
    changes: dict[str, TableChanges] = field(default_factory=dict)
    ops: tuple[TableOp, ...] = ()
    positions: dict[str, str] = field(default_factory=dict)


def source_of(table: str) -> str:
    """The source of a lake table `<source>.<schema>.<table>` (source names hold no dot)."""
    return table.split(".", 1)[0]


def _groups(ops: Sequence[TableOp], events: Sequence[str]) -> list[tuple[TableOp, ...]]:
    """Ops in order, a `rows` message joined to the op before it (same table, nothing else
    in between); `rows` waiting for a DROP's confirmation are dropped unless it comes."""
    confirmed = {op.details.get("pending_drop") for op in ops if op.kind == "drop_partition"} - {
        None
    }
    groups: list[list[TableOp]] = []
    for op in ops:
        pending = op.details.get("pending_drop")
        if op.kind == "rows" and pending is not None and pending not in confirmed:
            continue  # a partition named in a DROP that did not drop it
        last = groups[-1][-1] if groups else None
        joins = (
            op.kind == "rows"
            and last is not None
            and last.table == op.table
            and not any(last.position < p < op.position for p in events)
        )
        if joins:
            groups[-1].append(op)
        else:
            groups.append([op])
    return [tuple(g) for g in groups]


def _stretch(
    changes: dict[str, TableChanges], low: str | None, high: str | None
) -> dict[str, TableChanges]:
    out = {}
    for name, change in changes.items():
        position = change.events.column(POSITION)
        mask = pa.repeat(True, change.events.num_rows)
        if low is not None:
            mask = pc.and_(mask, pc.greater(position, pa.scalar(low, pa.string())))
        if high is not None:
            mask = pc.and_(mask, pc.less(position, pa.scalar(high, pa.string())))
        events = change.events.filter(mask)
        if events.num_rows:
            out[name] = TableChanges(change.table, change.key_columns, events)
    return out


def _positions(changes: dict[str, TableChanges], ops: Sequence[TableOp]) -> dict[str, str]:
    out: dict[str, str] = {}
    candidates = [
        (source_of(name), pc.max(c.events.column(POSITION)).as_py()) for name, c in changes.items()
    ] + [(source_of(op.table), op.position) for op in ops]
    for source, position in candidates:
        if position is not None and (source not in out or position > out[source]):
            out[source] = position
    return out


def plan(
    batch_id: int,
    changes: dict[str, TableChanges],
    ops: Sequence[TableOp],
    *,
    positions: dict[str, str],
) -> list[Step]:
    """The steps of one batch (`batch_id` is its first reserved id, one more per step).

    The last step records the batch's own `positions` (they may reach past its events: the
    markers and heartbeats after them).
    """
    ordered = sorted(ops, key=lambda op: op.position)
    every = sorted(p for c in changes.values() for p in c.events.column(POSITION).to_pylist() if p)
    steps: list[Step] = []
    next_id = batch_id
    low: str | None = None
    for group in _groups(ordered, every):
        before = _stretch(changes, low, group[0].position)
        if before:
            steps.append(Step(next_id, before, (), _positions(before, ())))
            next_id += 1
        steps.append(Step(next_id, {}, group, _positions({}, group)))
        next_id += 1
        low = group[-1].position
    after = _stretch(changes, low, None) if ordered else changes
    if after or not steps:
        steps.append(Step(next_id, after, (), dict(positions)))
    else:
        last = steps[-1]
        steps[-1] = Step(last.batch_id, last.changes, last.ops, dict(positions))
    return steps

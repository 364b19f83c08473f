"""The embedded runner's table-wide changes (DDL, TRUNCATE): which it applies, and how.

A batch holding changes to captured tables is applied as steps (`stream_processors/steps.py`);
each change step goes to `stream_processors/table_ops.py` with what the runner knows: the
table's layers and key, its source's way to request a snapshot. A table refused since a DDL
(the schema log) has its events sent to the dead letters with that DDL as the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidemark.kernel.columns import Layer
from tidemark.kernel.table_ops import TableOp
from tidemark.stream_processors import steps, table_ops


@dataclass
class TableSteps:
    """Applies change steps for one runner.

    Attributes:
        lake: the lake facade.
        layers: the configured tables' layers (None: every table, all layers).
        sources: per source name, (its decoder's key overrides, its snapshot requester).
        keys: each table's key as last decoded.
    """

    lake: Any
    layers: Mapping[str, frozenset[Layer]] | None
    sources: Mapping[
        str, tuple[Mapping[str, tuple[str, ...]], Callable[[str, str | None], None] | None]
    ]
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def captured(self, ops: Sequence[TableOp]) -> list[TableOp]:
        """The ops of configured tables (others' DDL arrives too: one trigger per database)."""
        return [op for op in ops if self.layers is None or op.table in self.layers]

    def refusal(self, table: str) -> str | None:
        """Why a table's events go to the dead letters since a DDL (the schema log), if so."""
        log = getattr(self.lake, "schema_log", None)
        return log.refusal(table) if log is not None else None

    def apply(
        self,
        step: steps.Step,
        started: datetime,
        closed_by: str | None,
        *,
        dead_letters: Sequence[Any] = (),
        split: Mapping[str, str] | None = None,
        consistent: bool | None = None,
    ) -> Any:
        """Apply one change step (its op and the `rows` messages with it); the lake's result
        of the step's commit (`dead_letters`, the batch's, are stored with it; `split` and
        `consistent` go to its batch-log row)."""
        op = step.ops[0]
        overrides, request = self.sources.get(steps.source_of(op.table), ({}, None))
        ctx = table_ops.OpContext(
            lake=self.lake,
            layers=(self.layers or {}).get(op.table, frozenset(Layer)),
            batch_id=step.batch_id,
            started=started,
            positions=step.positions,
            keys=overrides.get(op.table) or self.keys.get(op.table),
            request_snapshot=request,
            closed_by=closed_by,
            dead_letters=tuple(dead_letters),
            split=dict(split or {}),
            consistent=consistent,
        )
        return table_ops.apply(step.ops, ctx)

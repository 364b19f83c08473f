"""The commit thread's work in the embedded runtime: one pipeline batch into the lake.

Split from the loop (`runner.py`), which cuts batches, polls and acknowledges: here a batch
is milestoned per table against the lake's open versions and committed with its dead
letters, its marks of a transaction committed in parts and of the consistent cut
(docs/pipeline.md, "Transactions of any size"), and what the lake holds of each tracked
source (`sources.records_of`). A batch holding DDL or TRUNCATE goes in steps
(`table_steps.py`); snapshots are reconciled with the lake (`reconcile.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import pyarrow as pa

from tidemark.kernel.columns import Layer
from tidemark.kernel.errors import TerminalError, TransientError
from tidemark.kernel.model import TableChanges
from tidemark.sinks.writer import BatchResult, LakeWriter, Refused
from tidemark.stream_processors import steps
from tidemark.stream_processors.batching import ClosedBy, PipelineBatch
from tidemark.stream_processors.embedded.reconcile import KeptKeysLake, Reconciler
from tidemark.stream_processors.embedded.sources import OpenSource, Target, records_of
from tidemark.stream_processors.embedded.table_steps import TableSteps
from tidemark.stream_processors.loading.gate import LoadGate
from tidemark.stream_processors.milestoning.core import milestone

logger = logging.getLogger(__name__)


class BatchApplier:
    """Milestones and commits batches for one runner (on its commit thread).

    Args:
        lake: the lake (`sinks.lake.Lake`, or a test double with the same typed API).
        sources: the runner's sources (their trackers give the records the lake keeps).
        layers: table -> the layers it keeps (None: all).
        keys: table -> key columns (reconciling snapshots).
    """

    def __init__(
        self,
        lake: LakeWriter,
        sources: Sequence[OpenSource],
        *,
        layers: Mapping[str, frozenset[Layer]] | None,
        keys: Mapping[str, tuple[str, ...]] | None,
        gate: LoadGate | None = None,
    ) -> None:
        self.lake = lake
        self.gate = gate  # tables armed by the parallel loader (stream_processors/loading)
        self.sources = sources
        self.layers = layers
        self.reconciler = Reconciler(cast(KeptKeysLake, lake), layers=layers or {}, keys=keys or {})
        self.tables = TableSteps(  # DDL and TRUNCATE (docs/schema-changes.md)
            lake,
            layers,
            {
                s.spec.name: (getattr(s.spec.decoder, "key_columns", {}), s.spec.request_snapshot)
                for s in sources
            },
        )

    def apply(
        self,
        batch: PipelineBatch,
        started: datetime,
        targets: Mapping[str, Target],
        record_id: int | None,
    ) -> BatchResult:
        """Milestone each table against the lake and commit the batch with its dead letters.

        The replay guard runs inside `milestone` at the table's watermark (events Debezium
        delivers again, copies of one position, snapshot rows the lake already holds); a
        table that cannot be milestoned (a column type the lake's cannot take, a value Arrow
        cannot handle) goes to the dead letters with the batch and the rest is committed
        (DESIGN §3.3, guarantee 7). A batch holding DDL or TRUNCATE is applied as steps: the
        events before each change, the change, the events after it (docs/schema-changes.md),
        each under its own reserved batch id; the batch's dead letters go with the first, and
        what the lake holds of each source goes in a commit of its own after the last
        (`record_id`, reserved when the batch was cut). `targets`: what acknowledging the batch
        means per source (`sources.plan_targets`).
        """
        plans = [t.plan for t in targets.values() if t.plan is not None]
        # The keys of tables being snapshotted kept, and the rows a snapshot this batch
        # completes shows gone deleted (`reconcile.py`).
        changes = self.reconciler.changes(batch.batch_id, batch.changes, plans)
        ops = self.tables.captured(batch.ops)
        if not ops:
            result = self._commit(
                batch.batch_id,
                changes,
                batch.positions,
                started,
                batch.closed_by,
                batch.dead_letters,
                split=batch.split,
                consistent=batch.consistent,
                records=targets,
            )
            self.reconciler.forget(plans)
            return result
        step_result: BatchResult | None = None
        letters = batch.dead_letters
        plan = list(steps.plan(batch.batch_id, changes, ops, positions=batch.positions))
        for index, step in enumerate(plan):
            # A step ends inside the batch, perhaps inside a transaction: only the last one
            # can leave the lake transaction-consistent (docs/pipeline.md, the consistent cut).
            consistent = batch.consistent and index == len(plan) - 1
            if step.ops:
                step_result = self.tables.apply(
                    step,
                    started,
                    batch.closed_by,
                    dead_letters=letters,
                    split=batch.split,
                    consistent=consistent,
                )
            else:
                step_result = self._commit(
                    step.batch_id,
                    step.changes,
                    step.positions,
                    started,
                    batch.closed_by,
                    letters,
                    split=batch.split,
                    consistent=consistent,
                )
            letters = ()
        assert step_result is not None  # a plan has at least one step
        if record_id is not None:  # what the lake holds of each source, after it all
            self._commit(
                record_id,
                {},
                batch.positions,
                started,
                batch.closed_by,
                (),
                split=batch.split,
                consistent=batch.consistent,
                records=targets,
            )
        self.reconciler.forget(plans)
        return step_result

    def _commit(
        self,
        batch_id: int,
        changes_by_table: Mapping[str, TableChanges],
        positions: Mapping[str, str],
        started: datetime,
        closed_by: ClosedBy,
        dead_letters: Sequence[Any],
        *,
        split: Mapping[str, str],
        consistent: bool,
        records: Mapping[str, Target] | None = None,
    ) -> BatchResult:
        """One stretch of events: milestoned per table and committed as one batch (`split`,
        `consistent`: the batch log's marks of a transaction in parts and of the cut); with
        `records` (the batch's targets), the batch log gets what the lake holds of each
        source with it."""
        tables = []
        refused: list[Refused] = []
        for name, changes in changes_by_table.items():
            self.tables.keys[name] = changes.key_columns
            refusal = self.tables.refusal(name)
            if refusal:  # a DDL refused the table (docs/schema-changes.md)
                refused.append(Refused(changes, refusal))
                continue
            keys = changes.events.select(list(changes.key_columns))
            layers = (self.layers or {}).get(name, frozenset(Layer))
            try:
                current = self.lake.current_versions(name, keys, layers)
                if self.gate is not None:  # drop what a load's snapshot already holds
                    changes = self.gate.admit(changes, current)
                result = milestone(
                    changes,
                    current,
                    batch_id=batch_id,
                    ingested_at=started,
                    applied_position=self.lake.applied_position(name, layers),
                )
            except TransientError:
                raise
            except (TerminalError, pa.ArrowException, ArithmeticError, ValueError) as exc:
                # E.g. a column type the lake's cannot take, a value Arrow cannot handle: it
                # follows from this table's events, so they go to the dead letters and the
                # other tables go on; raising would fail the same way on every restart
                # (DESIGN §3.3, guarantee 7).
                reason = exc.message if isinstance(exc, TerminalError) else _reason(exc)
                logger.error(
                    "batch %d, table %s: %s; its %d events go to the dead letters",
                    batch_id,
                    name,
                    reason,
                    changes.events.num_rows,
                    exc_info=not isinstance(exc, TerminalError),
                )
                refused.append(Refused(changes, reason))
                continue
            tables.append(result)
        kept = records_of(self.sources, records, tables) if records is not None else {}
        return self.lake.commit_batch(
            batch_id,
            tables,
            source_positions=positions,
            started_at=started,
            layers=self.layers,
            closed_by=closed_by,
            dead_letters=dead_letters,
            split=split,
            consistent=consistent,
            refused=refused,
            sources=kept or None,
        )


def _reason(exc: BaseException) -> str:
    """One line naming an unexpected failure (a dead letter's reason)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""What the runner keeps per source between polls, and what a batch acknowledges of it.

Each polled engine batch is a `Chunk`: its last record (what acknowledging it passes to the
engine), the highest position it reached, and the Debezium notifications it carried. When a
batch is cut, `plan_targets` says per source which chunk acknowledging the batch covers and,
for a source whose record the lake keeps (`arming.SourceTracker`), what the batch does to
that record: the offsets the acknowledgement will store (asked of the engine before it
stores them), the snapshot notices of the covered chunks, the snapshot rows it carries.
`records_of` renders every tracked source's record for the batch log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow.compute as pc

from tidemark.kernel.columns import OP, Op
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.kernel.records import RawRecord
from tidemark.stream_processors.batching import PipelineBatch
from tidemark.stream_processors.embedded.arming import Notification, Plan

if TYPE_CHECKING:
    from tidemark.stream_processors.embedded.runner import Engine, SourceSpec


@dataclass
class Chunk:
    """One polled engine batch: its last record, the highest position it reached, and the
    Debezium notifications it carried (in stream order)."""

    last: RawRecord
    position: str | None
    notes: list[Notification] = field(default_factory=list)


@dataclass
class Target:
    """What acknowledging one source after a batch means: its newest chunk the batch
    covers (None: none is whole in it yet), and (tracked sources) what the batch does to
    the lake's record of the source."""

    chunk: Chunk | None
    plan: Plan | None = None


@dataclass
class OpenSource:
    """A source as the runner holds it: its engine and the chunks polled, not acknowledged."""

    spec: SourceSpec
    engine: Engine | None = None
    chunks: list[Chunk] = field(default_factory=list)
    last_position: str | None = None


def plan_targets(
    sources: Sequence[OpenSource], batch: PipelineBatch, *, idle: bool
) -> dict[str, Target]:
    """Per source, the newest chunk `batch` covers (every chunk when `idle`: nothing is held)
    and, for a tracked source, the record the lake gets with the batch. A tracked source
    gets a plan even when no chunk is whole in the batch: the keys of tables being
    snapshotted must be kept from every batch."""
    targets: dict[str, Target] = {}
    for source in sources:
        position = batch.positions.get(source.spec.name)
        covered = [
            c
            for c in source.chunks
            if idle or (position is not None and c.position is not None and c.position <= position)
        ]
        if source.engine is None:
            continue
        target = Target(covered[-1] if covered else None)
        tracker = source.spec.tracker
        if tracker is not None:
            prefix = source.spec.name + "."
            changes = [t for n, t in batch.changes.items() if n.startswith(prefix)]
            target.plan = tracker.plan(
                offsets=source.engine.offset_for(covered[-1].last) if covered else None,
                notifications=[n for c in covered for n in c.notes],
                snapshot_rows=snapshot_rows(changes),
            )
        if target.chunk is not None or target.plan is not None:
            targets[source.spec.name] = target
    return targets


def records_of(
    sources: Sequence[OpenSource],
    targets: Mapping[str, Target],
    committed: Sequence[MilestonedTable],
) -> dict[str, str]:
    """Every tracked source's record as of a batch that commits `committed` (JSON)."""
    positions = {t.table: t.last_position for t in committed}
    records: dict[str, str] = {}
    for source in sources:
        tracker = source.spec.tracker
        if tracker is None:
            continue
        target = targets.get(source.spec.name)
        if target is not None and target.plan is not None:
            records[source.spec.name] = target.plan.finish(positions)
        else:
            records[source.spec.name] = tracker.record.to_json()
    return records


def snapshot_rows(changes: Sequence[TableChanges]) -> dict[str, int]:
    """table -> its snapshot rows (op r) among `changes`."""
    out: dict[str, int] = {}
    for table in changes:
        count = pc.sum(pc.equal(table.events.column(OP), Op.READ.value)).as_py() or 0
        if count:
            out[table.table] = int(count)
    return out

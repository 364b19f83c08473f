"""How a lane, or a topic's group of lanes, commits one batch (shared by `lane.py` and
`group.py`): batch ids that encode Kafka offsets, the replay guard per partition, one
milestoning pass, and one `Lake.commit_batch` whose streams record every partition's next
offset (txn version) and watermark (the highest source position it applied).

Each Kafka partition is a stream of the replay guard (docs/pipeline.md): Debezium keys
records by primary key, so a partition holds a subsequence of the source's changes in
source order, and its positions grow. Kafka Connect re-sends what followed its last offset
flush at *new* offsets after a crash; those records are at or below the partition's
watermark and are dropped, whatever offset brought them and whatever became of their keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import POSITION, Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.kernel.replay import Watermark
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.writer import StreamWriter
from tidemark.stream_processors.milestoning.core import milestone

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
PARTITION_BITS = 12
"""Batch ids are `next_offset << 12 | partition`: ordered like the offsets within a lane and
unique across the partitions of a table (the forensic layer's replay cleanup matches rows by
batch id, and lanes sharing buckets must never match each other's)."""


def batch_id_of(next_offset: int, partition: int) -> int:
    """The Delta txn version / `_tm_batch` of the batch that ends before `next_offset`."""
    if not 0 <= partition < 1 << PARTITION_BITS:
        raise ValueError(f"partition {partition} exceeds {1 << PARTITION_BITS} partitions")
    return next_offset << PARTITION_BITS | partition


def offset_of(batch_id: int) -> int:
    """The next offset to read, from a lane's txn version (0 when nothing is applied)."""
    return batch_id >> PARTITION_BITS


class RecordedLane(Protocol):
    """What a commit needs of each lane whose offset it records."""

    partition: int
    lane_app: str


@dataclass
class LaneBatch:
    """One lane's part of a batch: its records' end, and its decoded events' highest
    position (None: no change events), for the stream the commit records."""

    lane: RecordedLane
    end: int
    position: str | None

    def stream(self) -> StreamCommit:
        return StreamCommit(
            self.lane.lane_app, batch_id_of(self.end, self.lane.partition), self.position
        )


@dataclass
class Outcome:
    """What applying records did (per lane, or for a topic's group of lanes).

    Attributes:
        seek_to: the consumer must re-read the partition from this offset (gap, zombie).
        events: change events committed.
        batches: Delta batches committed (0, 1 or 2: a crash-boundary batch splits).
        commit_seconds: wall time of each committed batch (decode to durable commit).
        dead_letters: records sent to the dead letters.
        seeks: partition -> offset to re-read (a group of lanes).
    """

    seek_to: int | None = None
    events: int = 0
    batches: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    dead_letters: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    seeks: dict[int, int] = field(default_factory=dict)

    def timed(self, phase: str, seconds: float) -> None:
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds

    def committed(
        self, tables: Sequence[MilestonedTable], letters: Sequence[DeadLetter], started: float
    ) -> None:
        """Count one committed batch (the post-commit bookkeeping of lanes and groups)."""
        self.events += sum(t.changelog.num_rows for t in tables)
        self.batches += 1 if tables else 0
        self.dead_letters += len(letters)
        self.commit_seconds.append(time.perf_counter() - started)

    def merge(self, partition: int, other: Outcome) -> None:
        """Add a lane's outcome to a group's."""
        self.events += other.events
        self.batches += other.batches
        self.dead_letters += other.dead_letters
        self.commit_seconds.extend(other.commit_seconds)
        for phase, seconds in other.phase_seconds.items():
            self.timed(phase, seconds)
        if other.seek_to is not None:
            self.seeks[partition] = other.seek_to


def highest_position(events: pa.Table) -> str | None:
    """The highest `_tm_position` of decoded events (None when there are none)."""
    if events.num_rows == 0 or POSITION not in events.column_names:
        return None
    top = pc.max(events.column(POSITION)).as_py()
    return str(top) if top is not None else None


def write_batch(
    lake: StreamWriter,
    layers: frozenset[Layer],
    lanes: Sequence[LaneBatch],
    batch_id: int,
    tables: Sequence[MilestonedTable],
    letters: Sequence[DeadLetter],
) -> None:
    """The batch's tables and dead letters in one `commit_batch`, recording every lane's
    stream (the first lane's txn also stamps the batch log and dead letters). Without tables
    only the dead letters are stored: the lanes' offsets stay, the records come again."""
    streams = [lane.stream() for lane in lanes]
    if not tables:
        lake.write_dead_letters(letters, batch_id=batch_id, stream=streams[0].app)
        return
    lake.commit_batch(
        batch_id,
        tables,
        source_positions={t.table: t.last_position for t in tables},
        started_at=datetime.now(UTC),
        layers={t.table: layers for t in tables},
        streams=streams,
        dead_letters=letters,
    )


def milestone_tables(
    lake: StreamWriter,
    changes: Mapping[str, TableChanges],
    batch_id: int,
    layers: frozenset[Layer],
    watermarks: Mapping[str, Watermark],
) -> list[MilestonedTable]:
    """The core over each table's events, against the open versions the lake holds, with
    each table's replay-guard watermarks (one per event when partitions are merged)."""
    out = []
    now = datetime.now(UTC)
    for table, change in changes.items():
        events = change.events
        if events.num_rows == 0:
            continue
        keys = (
            events.select(list(change.key_columns)).group_by(list(change.key_columns)).aggregate([])
        )
        current = lake.current_versions(table, keys, layers)
        out.append(
            milestone(
                change,
                current,
                batch_id=batch_id,
                ingested_at=now,
                applied_position=watermarks.get(table),
            )
        )
    return out

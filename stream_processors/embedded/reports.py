"""What the embedded runner reports: one committed batch (`BatchReport`), totals of a run.

Split from the loop (`runner.py`): progress displays, the status page, gold and the
benchmarks read these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import SOURCE_TS
from tidemark.sinks.writer import BatchResult
from tidemark.stream_processors.batching import PipelineBatch


@dataclass(frozen=True)
class BatchReport:
    """What one committed batch did, for progress displays, status and benchmarks."""

    batch_id: int
    events: int
    transactions: int
    tables: dict[str, int]
    dead_letters: int
    closed_by: str
    started_at: datetime
    committed_at: datetime
    max_source_ts: datetime | None
    source_ts: pa.Array | None = None  # every event's commit time (for latency percentiles)
    lake_result: BatchResult | None = None  # what the lake returned (commit times, counts)
    consistent: bool = True  # the lake holds whole source transactions after it (no open part)


@dataclass
class RunStats:
    """Totals over one `run`."""

    batches: int = 0
    events: int = 0
    dead_letters: int = 0
    retries: int = 0
    reopened: int = 0
    last: BatchReport | None = None


def report_of(
    batch: PipelineBatch, started: datetime, result: BatchResult, *, keep_source_ts: bool
) -> BatchReport:
    """What one committed batch did (`keep_source_ts`: every event's commit time with it)."""
    stamps = [
        t.events.column(SOURCE_TS)
        for t in batch.changes.values()
        if SOURCE_TS in t.events.column_names
    ]
    every = (
        pa.chunked_array([s for s in stamps for s in s.chunks], pa.timestamp("us", "UTC"))
        if stamps
        else None
    )
    highest = pc.max(every).as_py() if every is not None and len(every) else None
    committed = result.committed_at
    return BatchReport(
        batch_id=batch.batch_id,
        events=batch.event_count,
        transactions=batch.tx_count,
        tables={n: t.events.num_rows for n, t in batch.changes.items()},
        dead_letters=len(batch.dead_letters),
        closed_by=batch.closed_by,
        started_at=started,
        committed_at=committed,
        max_source_ts=highest,
        source_ts=every.combine_chunks() if keep_source_ts and every is not None else None,
        lake_result=result,
        consistent=batch.consistent,
    )

"""The batch log and the dead letters, read a few files at a time.

Both tables grow by one small file per batch, so a panel that shows the newest N rows reads
only the newest files: the files are ordered by their time statistics (`committed_at`,
`recorded_at`), and a read filtered on that time skips every other file unopened (delta-rs
hands pyarrow each file's statistics as its guarantee). Filters the statistics cannot serve
(a table inside a batch's list of tables, a word in a reason) are applied to those rows, and
more files are read until the page is full or the table is exhausted.

Dead letters per table are counted from statistics too: a file whose `table` column has one
value holds that many letters of that table; only files that mix tables are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tidemark.observe.lake import LakeMeta

BATCHES = ("_tidemark", "batches")
DEAD_LETTERS = ("_tidemark", "dead_letters")
UNDECODABLE = "(undecodable)"


@dataclass(frozen=True)
class BatchRow:
    """One committed batch, as the batch log records it.

    Attributes:
        seconds: from the batch's start (events cut) to its record in the batch log.
        events: change events the batch brought, over all its tables.
        closed_by: what closed it (`size`, `latency`, `force`; `load` for a load's hand-over,
            docs/loading.md); None for older lakes.
        tables: per table, rows per layer operation (`changelog`, `live_upserts`, ...).
        positions: per source, the last source position the batch covers.
    """

    batch_id: int
    started_at: datetime | None
    committed_at: datetime | None
    seconds: float | None
    events: int
    closed_by: str | None
    tables: dict[str, dict[str, int]]
    positions: dict[str, str]


@dataclass(frozen=True)
class DeadLetterRow:
    """One dead letter: what could not be decoded or applied, and why.

    Attributes:
        recorded_at: when it was first recorded (a replayed batch never records it again).
        stage: `decode` (the envelope could not be read) or `apply` (the lake refused it).
    """

    recorded_at: datetime | None
    table: str
    stage: str | None
    reason: str | None
    origin: str | None
    position: str | None
    batch_id: int | None
    raw_key: str | None
    raw_value: str | None


@dataclass
class DeadLetterCounts:
    """Dead letters per lake table, and when each table's newest was recorded."""

    counts: dict[str, int] = field(default_factory=dict)
    newest: dict[str, datetime] = field(default_factory=dict)


def _newest_rows(
    meta: LakeMeta,
    parts: tuple[str, ...],
    *,
    time_column: str,
    limit: int,
    keep: Callable[[dict[str, Any]], bool],
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest `limit` rows (by `time_column`, newest first) that `keep` accepts."""
    table = meta.table(*parts)
    actions = meta.actions(*parts)
    if table is None or actions is None or actions.num_rows == 0:
        return []
    high = f"max.{time_column}"
    stamps: list[datetime] = []
    if high in actions.column_names:  # without statistics everything is read once
        stamps = [s for s in actions.column(high).to_pylist() if s is not None]
    ordered = sorted(stamps, reverse=True)
    dataset = table.to_pyarrow_dataset()  # append-only bookkeeping tables: no deletion vectors
    files = max(limit, 1)
    while True:
        cutoff = ordered[min(files, len(ordered)) - 1] if ordered and files < len(ordered) else None
        floor = max((t for t in (cutoff, since) if t is not None), default=None)
        condition = None if floor is None else ds.field(time_column) >= pa.scalar(floor)
        rows = dataset.to_table(filter=condition).to_pylist()
        rows.sort(key=lambda r: (r.get(time_column) is not None, r.get(time_column)), reverse=True)
        kept = [r for r in rows if keep(r)]
        exhausted = cutoff is None or (since is not None and cutoff <= since)
        if len(kept) >= limit or exhausted:
            return kept[:limit]
        files *= 4


def latest_batches(
    meta: LakeMeta,
    *,
    limit: int = 50,
    table: str | None = None,
    closed_by: str | None = None,
    since: datetime | None = None,
) -> list[BatchRow]:
    """The newest batches of the batch log, newest first, optionally only those that touched
    `table`, were closed by `closed_by`, or committed at or after `since`."""

    def keep(row: dict[str, Any]) -> bool:
        if closed_by is not None and row.get("closed_by") != closed_by:
            return False
        return table is None or any(t.get("table") == table for t in row.get("tables") or ())

    rows = _newest_rows(
        meta, BATCHES, time_column="committed_at", limit=limit, keep=keep, since=since
    )
    return [_batch_row(r) for r in rows]


def _batch_row(row: dict[str, Any]) -> BatchRow:
    tables = {
        str(t["table"]): {k: int(v or 0) for k, v in t.items() if k != "table"}
        for t in row.get("tables") or ()
    }
    started, committed = row.get("started_at"), row.get("committed_at")
    return BatchRow(
        batch_id=int(row["batch_id"]),
        started_at=started,
        committed_at=committed,
        seconds=(committed - started).total_seconds() if started and committed else None,
        events=sum(t.get("changelog", 0) + t.get("dead_letters", 0) for t in tables.values()),
        closed_by=row.get("closed_by"),
        tables=tables,
        positions=dict(row.get("source_positions") or ()),
    )


def dead_letters(
    meta: LakeMeta,
    *,
    limit: int = 100,
    table: str | None = None,
    stage: str | None = None,
    text: str | None = None,
    since: datetime | None = None,
) -> list[DeadLetterRow]:
    """The newest dead letters, newest first, filtered by table (`(undecodable)` for letters
    that name none), stage, a word in the reason or the payload, and time."""
    needle = text.lower() if text else None

    def keep(row: dict[str, Any]) -> bool:
        if table is not None and (row.get("table") or UNDECODABLE) != table:
            return False
        if stage is not None and row.get("stage") != stage:
            return False
        if needle is None:
            return True
        return any(needle in str(row.get(k) or "").lower() for k in ("reason", "raw_value"))

    rows = _newest_rows(
        meta, DEAD_LETTERS, time_column="recorded_at", limit=limit, keep=keep, since=since
    )
    return [
        DeadLetterRow(
            recorded_at=r.get("recorded_at"),
            table=r.get("table") or UNDECODABLE,
            stage=r.get("stage"),
            reason=r.get("reason"),
            origin=r.get("origin"),
            position=r.get("position"),
            batch_id=r.get("batch_id"),
            raw_key=r.get("raw_key"),
            raw_value=r.get("raw_value"),
        )
        for r in rows
    ]


def dead_letter_counts(meta: LakeMeta) -> DeadLetterCounts:
    """Dead letters per table, from file statistics (files mixing tables are read)."""
    found = meta.derived(DEAD_LETTERS, "counts", lambda t: _count_letters(t, meta))
    return found if found is not None else DeadLetterCounts()


def _count_letters(table: Any, meta: LakeMeta) -> DeadLetterCounts:
    actions = meta.actions(*DEAD_LETTERS)
    result = DeadLetterCounts()
    if actions is None or actions.num_rows == 0:
        return result
    names = actions.column_names
    mixed: list[str] = []

    def add(name: str, count: int, newest: datetime | None) -> None:
        result.counts[name] = result.counts.get(name, 0) + count
        if newest is not None and (name not in result.newest or newest > result.newest[name]):
            result.newest[name] = newest

    def column(name: str) -> list[Any]:
        return actions.column(name).to_pylist() if name in names else [None] * actions.num_rows

    for path, n, low, high, nulls, newest in zip(
        column("path"),
        column("num_records"),
        column("min.table"),
        column("max.table"),
        column("null_count.table"),
        column("max.recorded_at"),
        strict=True,
    ):
        if nulls == n:
            add(UNDECODABLE, int(n), newest)
        elif not nulls and low is not None and low == high:
            add(str(low), int(n), newest)
        else:
            mixed.append(str(path))
    if mixed:
        dataset = table.to_pyarrow_dataset()
        wanted = set(mixed)
        for fragment in dataset.get_fragments():
            if not any(fragment.path.endswith(p) for p in wanted):
                continue
            part = fragment.to_table(columns=["table", "recorded_at"])
            tables = pc.fill_null(part.column("table"), UNDECODABLE).to_pylist()
            for name, when in zip(tables, part.column("recorded_at").to_pylist(), strict=True):
                add(str(name), 1, when)
    return result

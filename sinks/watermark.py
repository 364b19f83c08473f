"""The lake's consistent-cut watermark: the last batch after which it holds whole source
transactions only.

Why: a source transaction bigger than a batch is committed in parts (docs/pipeline.md,
"Transactions of any size"), and even a batch of whole transactions reaches its tables one
Delta commit at a time. A reader who wants a transaction-consistent lake reads every table
as of the watermark batch W: the newest row of the batch log (`_tidemark/batches`) whose
`consistent` is true. The lake at W holds exactly the source's transactions up to
`Watermark.positions` (per source), in every table and layer:

- changelog: the rows with `_tm_batch <= W`;
- forensic: the rows with `_tm_batch_in <= W`, where a row with `_tm_batch_out > W` is still
  open (its `_tm_valid_to` and `_tm_batch_out` read as NULL);
- live: the Delta version of the live table that holds no batch above W (time travel; its
  commits carry `tidemark.batch` in their metadata), see `live_version`.

The batch log's rows say it (`consistent`, `split_transactions`), and each of its commits
also carries the watermark as of that commit in its commit metadata (`tidemark.cut.*`), so a
reader finds it in the Delta log without reading data. A batch log whose newest row has no
`consistent` value (rows of older versions, or the distributed runtime, which keeps no
watermark) yields None: read the tables as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from tidemark.sinks.delta.table import BATCH_KEY, table_uri
from tidemark.sinks.errors import delta_errors

COLUMNS = ("batch_id", "source_positions", "committed_at", "split_transactions", "consistent")
"""The batch log columns a watermark is read from."""

CUT_BATCH = "tidemark.cut.batch"
CUT_POSITIONS = "tidemark.cut.positions"
CUT_AT = "tidemark.cut.at"
CUT_OPEN = "tidemark.cut.open"
CUT_PENDING = "tidemark.cut.pending"
_LOOK_BACK = (1, 20, 200)  # batch log commits to look through for a stamped one


@dataclass(frozen=True)
class Watermark:
    """Where a transaction-consistent reader reads the lake.

    Attributes:
        batch_id: W: every table and layer as of this batch holds whole source transactions
            (0: none yet, the lake holds only parts of its first transaction).
        positions: source -> the position every table of that source has fully reached.
        committed_at: when batch W was recorded.
        latest_batch: the newest batch in the log (above W while a split is open).
        open: source -> id of a transaction committed in part beyond W.
        pending: source -> the highest whole position of batches after W (they join
            `positions` when the next consistent batch comes).
    """

    batch_id: int
    positions: dict[str, str] = field(default_factory=dict)
    committed_at: datetime | None = None
    latest_batch: int = 0
    open: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)


def advance(
    cut: Watermark | None,
    *,
    batch_id: int,
    positions: Mapping[str, str],
    split: Mapping[str, str],
    consistent: bool,
    committed_at: datetime | None,
) -> Watermark:
    """The watermark after one more batch-log row."""
    base = cut or Watermark(0)
    pending = _highest(base.pending, positions)
    if consistent:
        return Watermark(batch_id, _highest(base.positions, pending), committed_at, batch_id)
    return Watermark(
        base.batch_id,
        base.positions,
        base.committed_at,
        batch_id,
        {**base.open, **split},
        pending,
    )


def fold(rows: Iterable[Mapping[str, Any]]) -> Watermark | None:
    """The watermark after batch-log rows (a row without `consistent` counts as whole)."""
    cut: Watermark | None = None
    for row in sorted(rows, key=lambda r: int(r["batch_id"])):
        cut = advance(
            cut,
            batch_id=int(row["batch_id"]),
            positions=dict(row.get("source_positions") or ()),
            split=dict(row.get("split_transactions") or ()),
            consistent=row.get("consistent") is not False,
            committed_at=row.get("committed_at"),
        )
    return cut


def watermark_of(log: pa.Table) -> Watermark | None:
    """The watermark of a batch log's rows (None when the log keeps none)."""
    if log.num_rows == 0 or "consistent" not in log.column_names:
        return None
    rows = log.select([c for c in COLUMNS if c in log.column_names]).to_pylist()
    if max(rows, key=lambda r: int(r["batch_id"]))["consistent"] is None:
        return None
    return fold(rows)


def stamp(cut: Watermark) -> dict[str, str]:
    """The commit metadata that carries a watermark."""
    return {
        CUT_BATCH: str(cut.batch_id),
        CUT_POSITIONS: json.dumps(cut.positions, sort_keys=True),
        CUT_AT: cut.committed_at.isoformat() if cut.committed_at else "",
        CUT_OPEN: json.dumps(cut.open, sort_keys=True),
        CUT_PENDING: json.dumps(cut.pending, sort_keys=True),
    }


def _from_stamp(commit: Mapping[str, Any]) -> Watermark:
    at = str(commit.get(CUT_AT) or "")
    return Watermark(
        batch_id=int(commit[CUT_BATCH]),
        positions=json.loads(commit.get(CUT_POSITIONS) or "{}"),
        committed_at=datetime.fromisoformat(at) if at else None,
        latest_batch=int(commit[BATCH_KEY]),
        open=json.loads(commit.get(CUT_OPEN) or "{}"),
        pending=json.loads(commit.get(CUT_PENDING) or "{}"),
    )


_UNSTAMPED = object()


def stamped(dt: DeltaTable) -> Watermark | object | None:
    """The watermark from the batch log's commit metadata: its newest batch commit's stamp
    (None: that commit keeps none); `_UNSTAMPED` when no batch commit is within reach."""
    with delta_errors(dt.table_uri):
        for limit in _LOOK_BACK:
            history = dt.history(limit)
            for commit in history:
                if BATCH_KEY not in commit:
                    continue  # maintenance (compaction, vacuum)
                return _from_stamp(commit) if CUT_BATCH in commit else None
            if len(history) < limit:
                break
    return _UNSTAMPED


def table_watermark(dt: DeltaTable) -> Watermark | None:
    """The watermark of an opened batch log table: from its Delta log when stamped, else
    from its rows."""
    found = stamped(dt)
    if found is not _UNSTAMPED:
        return found if isinstance(found, Watermark) else None
    with delta_errors(dt.table_uri):
        dataset = dt.to_pyarrow_dataset()
        names = [c for c in COLUMNS if c in dataset.schema.names]
        return watermark_of(dataset.to_table(columns=names))


def read_watermark(root: str, storage_options: Mapping[str, str] | None = None) -> Watermark | None:
    """The watermark of the lake at `root` (None: no batch log, or one without a watermark)."""
    uri = table_uri(root, "_tidemark", "batches")
    options = dict(storage_options or {}) or None
    with delta_errors(uri):
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        dt = DeltaTable(uri, storage_options=options)
    return table_watermark(dt)


def live_version(dt: DeltaTable, batch_id: int) -> int | None:
    """The newest version of a layer table whose commits hold no batch above `batch_id`.

    The table's current version when its newest Tidemark commit is at or below the batch;
    None when every commit is above it (the table did not exist at the watermark). Only
    for tables no one else commits to (live: maintenance never rewrites it).
    """
    limit: int | None = 50
    while True:
        with delta_errors(dt.table_uri):
            history = dt.history(limit)
        for commit in history:
            stamped_batch = commit.get(BATCH_KEY)
            if stamped_batch is not None and int(stamped_batch) <= batch_id:
                return int(commit["version"])
        if limit is None or len(history) < limit:
            return None
        limit = None  # a long split: look through the whole history


def newest_batch(dt: DeltaTable) -> int | None:
    """The batch of a table's newest commit, if Tidemark stamped it."""
    with delta_errors(dt.table_uri):
        history = dt.history(1)
    value = history[0].get(BATCH_KEY) if history else None
    return None if value is None else int(value)


def _highest(left: Mapping[str, str], right: Mapping[str, str]) -> dict[str, str]:
    out = dict(left)
    for source, position in right.items():
        if position and position > out.get(source, ""):
            out[source] = position
    return out

"""Maintenance of a merge-on-read table: fold DVs back into files, collect unused files.

Reads slow down as deleted rows pile up in files and as every batch adds a small file. A
round rewrites, in the partitions that take updates (live; forensic's open versions), the
files whose deleted fraction passed `max_deleted`, the small files (a batch's appended file)
once there are `min_files` of them, the most deleted files while more than `max_dv_files`
carry a DV, and, in a table no writer touched for a minute, every file that carries one
(`every_dv`: delta-rs reads a table with any DV on one core). Their rows minus the
deleted ones go to new files, committed in place of them (`OPERATION = "OPTIMIZE"`, so
writers treat it as maintenance). It runs beside the writers and never blocks them: rows a
writer deletes from the files meanwhile become DVs of the new files (a round on hot files
would otherwise lose every race); a writer that loses to it locates its rows again.

delta-rs `vacuum(full=True)` deletes DV files that live files still use (its in-use set
holds data paths only) and breaks the table, and `vacuum(full=False)` never collects DV
files referenced only by removed files. `collect` does both jobs from the log state: any
file the current version does not use, older than the retention, goes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.transaction import AddAction
from pyroaring import BitMap64

from tidemark.sinks.delta.dv.commit import DvConflict, DvTable, add_json, loose_stats
from tidemark.sinks.delta.dv.format import build_file
from tidemark.sinks.delta.dv.index import positions
from tidemark.sinks.delta.dv.layer import ROW_GROUP_ROWS
from tidemark.sinks.delta.dv.log import LOG, FileEntry
from tidemark.sinks.delta.files import FileWriter, table_filesystem

log = logging.getLogger(__name__)

OPERATION = "OPTIMIZE"


@dataclass(frozen=True)
class Policy:
    """When a round rewrites files.

    Attributes:
        max_deleted: a file whose deleted fraction reaches this is rewritten.
        small_rows: files with fewer rows than this are small (a batch's appended file at a
            steady rate: hundreds to thousands of rows)...
        min_files: ...and rewritten together once a partition holds this many. A snapshot's
            or a backlog's files (tens of thousands of rows) are not small: folding a few
            hundred rows of batch files into them rewrote the whole table (a 1M-row round
            and a 1.9 s stall of the writer at 1,000 events/s).
        max_dv_files: at most this many files may carry a DV after a round.
        target_rows: rows per rewritten file.
        every_dv: rewrite every file that carries a DV, whatever its deleted fraction (a
            table no writer touched for a minute, `sinks/maintenance.py`). Readers
            pay for any DV: delta-rs reads a table with one in a single partition, on one
            core (its scan keeps whole files in one stream to number their rows), 1.5-2x
            the time of the same rows without DVs; an idle table is left without any.
    """

    max_deleted: float = 0.3
    small_rows: int = 16_384
    min_files: int = 16
    max_dv_files: int = 64
    target_rows: int = 1_000_000
    round_rows: int = 500_000
    """Rows one round rewrites at most (the most deleted files first): a round takes CPU
    from the writers and the writer indexes what it wrote, so rounds stay short; the rest
    waits for the next one (every 30 s)."""
    every_dv: bool = False


def choose(entries: list[FileEntry], policy: Policy) -> list[FileEntry]:
    """The files of one partition a round rewrites."""
    chosen: dict[str, FileEntry] = {}
    for entry in entries:
        records = entry.num_records or 0
        if records and entry.deleted / records >= policy.max_deleted:
            chosen[entry.path] = entry
    if policy.every_dv:
        chosen.update((e.path, e) for e in entries if e.dv is not None)
    small = [e for e in entries if (e.num_records or 0) < policy.small_rows]
    if len(small) >= policy.min_files:
        chosen.update((e.path, e) for e in small)
    with_dv = [e for e in entries if e.dv is not None and e.path not in chosen]
    excess = len(with_dv) - policy.max_dv_files
    if excess > 0:
        with_dv.sort(key=lambda e: e.deleted / max(e.num_records or 1, 1), reverse=True)
        chosen.update((e.path, e) for e in with_dv[: excess + policy.max_dv_files // 2])
    return list(chosen.values())


def _bounded(chosen: list[FileEntry], rows: int) -> list[FileEntry]:
    """The most deleted of `chosen`, up to about `rows` rows."""
    ranked = sorted(chosen, key=lambda e: e.deleted / max(e.num_records or 1, 1), reverse=True)
    out: list[FileEntry] = []
    total = 0
    for entry in ranked:
        if out and total + (entry.num_records or 0) > rows:
            break
        out.append(entry)
        total += entry.num_records or 0
    return out


@dataclass(frozen=True)
class Moved:
    """Where an input file's surviving rows went: output `output`, from row `offset` on;
    `deleted` are the rows it had deleted when it was read."""

    output: int
    offset: int
    deleted: BitMap64


def fold(
    uri: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    scope: Mapping[str, str] | None = None,
    policy: Policy | None = None,
) -> int:
    """One round on the table at `uri`, in the partition `scope` (forensic: the open
    versions); returns the files removed (0 when nothing needed it).

    A writer that deletes rows of the files being rewritten meanwhile does not make the
    round fail: its new deletions are carried over to the new files as their DVs (each
    input file's rows are contiguous in one output file), and the commit is tried again.
    """
    policy = policy or Policy()
    table = DvTable(uri, storage_options)
    if not table.state.dv_feature():
        return 0
    wanted = dict(scope or {})
    groups: dict[tuple[tuple[str, str | None], ...], list[FileEntry]] = {}
    for entry in table.state.files.values():
        values = entry.partition_values
        if all(values.get(k) == v for k, v in wanted.items()):
            groups.setdefault(tuple(sorted(values.items())), []).append(entry)
    chosen = _bounded(
        [e for entries in groups.values() for e in choose(entries, policy)], policy.round_rows
    )
    if not chosen:
        return 0
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    writer = FileWriter(  # on the round's own (lower priority) thread, not the writers' pool
        dt, table.state.partition_columns, row_group_rows=ROW_GROUP_ROWS, on_pool=False
    )
    moved = _rewrite(table, dt, writer, chosen, policy)
    actions = writer.wait()
    removes = [e.path for e in chosen]
    for _ in range(MAX_TRIES):
        try:
            adds = _adds(table, actions, moved, chosen)
            table.commit(deletes={}, removes=removes, adds=adds, operation=OPERATION)
            log.info("compacted %s files of %s into %s", len(chosen), uri, len(actions))
            return len(chosen)
        except DvConflict:
            if any(path not in table.state.files for path in removes):
                break  # another round or writer removed a file: its rows are elsewhere now
    log.info("compaction of %s gave up this round; trying next round", uri)
    for action in actions:
        table.store.delete(action.path)
    return 0


MAX_TRIES = 10


def _rewrite(
    table: DvTable, dt: DeltaTable, writer: FileWriter, chosen: list[FileEntry], policy: Policy
) -> dict[str, Moved]:
    """Write the chosen files' surviving rows to new files, a partition at a time."""
    fs = table_filesystem(dt)
    deleted = table.deleted_rows(chosen)
    moved: dict[str, Moved] = {}
    pending: list[pa.Table] = []
    rows = 0
    outputs = 0
    for key in sorted({tuple(sorted(e.partition_values.items())) for e in chosen}):
        values = dict(key)
        for entry in (e for e in chosen if e.partition_values == values):
            data = pq.read_table(entry.local_path, filesystem=fs)
            gone = deleted[entry.path]
            if gone:
                keep = pc.invert(pc.is_in(positions(0, data.num_rows), value_set=_array(gone)))
                data = data.filter(keep)
            moved[entry.path] = Moved(outputs, rows, gone)
            pending.append(data)
            rows += data.num_rows
            if rows >= policy.target_rows:
                outputs += _flush(writer, pending, values)
                pending, rows = [], 0
        outputs += _flush(writer, pending, values)
        pending, rows = [], 0
    return moved


def _adds(
    table: DvTable, actions: list[AddAction], moved: Mapping[str, Moved], chosen: list[FileEntry]
) -> list[dict[str, Any]]:
    """The new files' adds, with DVs for rows writers deleted since they were read."""
    now = {path: table.state.files[path] for path in moved if path in table.state.files}
    current = table.deleted_rows(now.values())
    extra: dict[int, BitMap64] = {}
    for path, where in moved.items():
        for row in current.get(path, BitMap64()) - where.deleted:
            position = where.offset + row - where.deleted.rank(row)
            extra.setdefault(where.output, BitMap64()).add(position)
    adds = [add_json(a) for a in actions]
    if not extra:
        return adds
    outputs = sorted(extra)
    name, content, descriptors = build_file([extra[i] for i in outputs])
    table.store.put(name, content)
    for index, dv in zip(outputs, descriptors, strict=True):
        adds[index]["deletionVector"] = dv.to_json()
        adds[index]["stats"] = loose_stats(adds[index].get("stats"))
    return adds


def _flush(writer: FileWriter, pending: list[pa.Table], values: Mapping[str, str | None]) -> int:
    """Write `pending` as one file; 1 if it wrote one."""
    if not pending:
        return 0
    data = pa.concat_tables(pending, promote_options="permissive")
    if data.num_rows == 0:
        return 0
    writer.write(data, {k: str(v) for k, v in values.items()})
    writer.wait()  # one output file in memory at a time
    return 1


def _array(rows: object) -> pa.Array:
    return pa.array(rows.to_array(), pa.int64())  # type: ignore[attr-defined]


def collect(
    uri: str,
    *,
    retention_hours: float,
    storage_options: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> int:
    """Delete data and DV files the current version does not use, written and given up
    (removed, or their DV replaced) before the retention: readers of the versions within
    it may still open them. Returns how many went."""
    table = DvTable(uri, storage_options)
    used = set()
    for entry in table.state.files.values():
        used.add(entry.local_path)
        relative = entry.dv.relative_path() if entry.dv is not None else None
        if relative is not None:
            used.add(relative)
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=retention_hours)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    removed = 0
    for found in table.store.walk():
        name = found.path
        base = name.rsplit("/", 1)[-1]
        if name.startswith((LOG, "_change_data/")) or base.startswith("."):
            continue
        if not (base.endswith(".parquet") or base.startswith("deletion_vector_")):
            continue
        if name in used or found.modified > cutoff:
            continue
        if table.state.tombstones.get(name, 0) > cutoff_ms:
            continue  # a version within the retention still uses it
        table.store.delete(name)
        removed += 1
    if removed:
        log.info("collected %s unused files of %s", removed, uri)
    return removed

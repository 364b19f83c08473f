"""Keeping a source's record (`SourceRecord`) up to date, batch by batch: the runner's half of
"the lake is the only source of truth for positions".

Each batch carries into the lake the Debezium offsets that acknowledging it will store
(`EmbeddedEngine.offset_for`), so what Debezium resumes from never runs ahead of the lake.
Snapshots are followed through Debezium's notifications, which arrive in stream order with
the data: `STARTED` begins arming tables (`Arming`), `TABLE_SCAN_COMPLETED` (incremental) or
`COMPLETED` (initial: its per-table notice can precede the table's last row) ends it. While
a table is armed into a lake that already holds rows, the keys of every event of it are
kept (`sinks/arming.py`); at completion the lake's rows whose key did not come vanished at
the source, and the batch that completes the snapshot deletes them (`reconcile.py`).
The record, the offsets and the deletes commit together, so a crash anywhere repeats the
step from the lake's offsets, and a snapshot under way resumes where Debezium's offsets
(inside the record) say it was.

Nothing here runs Debezium or writes the lake: `plan` is pure bookkeeping on the loop
thread, the runner applies it on the commit thread and adopts it once the batch committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tidemark.connectors.postgres.capture import RESYNC_PREFIX
from tidemark.kernel.model import TableChanges
from tidemark.kernel.positions import Arming, ArmingKind, SourceRecord

logger = logging.getLogger(__name__)

INITIAL = "Initial Snapshot"
INCREMENTAL = "Incremental Snapshot"
# Scans that read the whole table: only then do absent keys mean vanished rows.
_SCANNED = {"SUCCEEDED", "EMPTY"}


@dataclass(frozen=True)
class Notification:
    """One Debezium notification (the sink channel's record value)."""

    id: str
    aggregate: str
    type: str
    data: dict[str, str]
    timestamp_ms: int

    @classmethod
    def parse(cls, value: str) -> Notification:
        body = json.loads(value)
        return cls(
            str(body.get("id")),
            str(body.get("aggregate_type")),
            str(body.get("type")),
            {str(k): str(v) for k, v in (body.get("additional_data") or {}).items()},
            int(body.get("timestamp") or 0),
        )

    @property
    def collections(self) -> list[str]:
        names = self.data.get("data_collections") or ""
        return [n for n in names.split(",") if n]

    @property
    def at(self) -> str:
        when = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC) if self.timestamp_ms else None
        return (when or datetime.now(UTC)).isoformat()


@dataclass
class Plan:
    """What one batch does to a source's record (applied on commit, adopted after it).

    Attributes:
        record: the record as of the end of this batch (tables' positions added on commit).
        seen: table -> arming id: keep this batch's keys of the table.
        queued: table -> the id of a snapshot of it asked for while another runs (its notice
            polled, not yet recorded): the batch's keys of the table are kept for it too.
        completed: table -> the arming it completes (delete the vanished rows if it
            reconciles).
        vanished: table -> its events with the deletes of vanished rows (found once, on the
            first attempt to commit: a retry after some layers committed must not look again).
        settled: (table, snapshot id) of snapshots that ended without arming the table (a
            scan that did not read it): their notices polled early are void once it commits.
    """

    record: SourceRecord
    seen: dict[str, str] = field(default_factory=dict)
    queued: dict[str, str] = field(default_factory=dict)
    completed: dict[str, Arming] = field(default_factory=dict)
    vanished: dict[str, TableChanges | None] = field(default_factory=dict)
    settled: set[tuple[str, str]] = field(default_factory=set)

    def finish(self, positions: Mapping[str, str]) -> str:
        """The record's JSON once the batch committed `positions` (table -> highest)."""
        tables = self.record.tables
        for table, position in positions.items():
            if position and position > tables.get(table, ""):
                tables[table] = position
        return self.record.to_json()


class SourceTracker:
    """One source's record, as the runner advances it.

    Args:
        record: what the lake holds of the source as the run starts (`tidemark/startup.py`).
        lake_table: `schema.table` -> the lake table name (`<source>.<schema>.<table>`).
        tables: the source's lake tables (an initial snapshot arms all of them).
        held: the tables the lake held rows of as the run started; with those the run
            commits rows to, they are the tables whose snapshot must reconcile.
    """

    def __init__(
        self,
        record: SourceRecord,
        *,
        lake_table: Callable[[str], str],
        tables: Sequence[str],
        held: Iterable[str] = (),
    ) -> None:
        self.record = record
        self.lake_table = lake_table
        self.tables = list(tables)
        self.held = set(held)
        # STARTED notices polled but not yet in a committed batch: their tables' keys are
        # kept from then on, since events after the notice may go out before it does.
        self._early: dict[str, str] = {}
        # (table, snapshot id) whose STARTED notice was polled while the lake held no rows
        # of the table: the rows the snapshot commits before its notice's batch must not
        # make it reconcile (none of their keys were kept: all would be taken for gone).
        self._empty: set[tuple[str, str]] = set()

    def has_rows(self, table: str) -> bool:
        """Whether the lake may hold rows of `table` (then a snapshot of it reconciles)."""
        return table in self.held or table in self.record.tables

    def polled(self, notifications: Iterable[Notification]) -> None:
        """Notifications just polled (not yet covered by a batch)."""
        for note in notifications:
            begun = self._begins(note)
            if begun is None or not self._reconciles(begun[0], note):
                continue
            kind, tables = begun
            for table in tables:
                arming = self.record.arming.get(table)
                # A notice of the snapshot under way says nothing new. One of another
                # incremental snapshot is one asked for while this one runs: Debezium scans
                # the table again right after, and its first rows may go out before the
                # batch that records it.
                if table in self._early or (
                    arming is not None and (arming.id == note.id or kind == "initial")
                ):
                    continue
                if self.has_rows(table):
                    self._early[table] = note.id
                else:
                    self._empty.add((table, note.id))

    def plan(
        self,
        *,
        offsets: Mapping[str, str] | None,
        notifications: Sequence[Notification],
        snapshot_rows: Mapping[str, int],
    ) -> Plan:
        """The record after a batch covering `notifications` (in stream order), whose
        acknowledgement stores `offsets`, and that carries `snapshot_rows` (table -> op r
        events)."""
        record = self.record.copy()
        if offsets:
            record.offsets = {**(record.offsets or {}), **offsets}
        plan = Plan(record)
        for table, arming in record.arming.items():
            if arming.reconcile:
                plan.seen[table] = arming.id
        for table, arming_id in self._early.items():
            if plan.seen.setdefault(table, arming_id) != arming_id:
                plan.queued[table] = arming_id
        for note in notifications:
            self._apply(note, plan)
        for table, rows in snapshot_rows.items():
            if table in record.arming:
                record.arming[table].rows += rows
            elif table in plan.completed:
                plan.completed[table].rows += rows
        for table, arming in plan.completed.items():
            logger.info("table %s: snapshot %s complete (%d rows)", table, arming.id, arming.rows)
        return plan

    def adopt(self, plan: Plan) -> None:
        """The batch of `plan` committed: its record is now the lake's.

        A notice polled early stays in force until its own snapshot is in the record (or
        ended): a table armed by an earlier snapshot, the parallel loader's say, is in
        `armed` all along, and dropping the notice on that account lost the keys of the
        snapshot's first rows whenever a batch went out between the notice's poll and its
        chunk's batch (seen: a resync deleted 237 rows it had read).
        """
        self.record = plan.record
        settled = plan.settled | {(t, a.id) for t, a in plan.record.arming.items()}
        settled |= set(plan.record.armed.items())
        self._early = {t: i for t, i in self._early.items() if (t, i) not in settled}
        self._empty = {entry for entry in self._empty if entry not in settled}

    # -- notifications -------------------------------------------------------------------
    @staticmethod
    def _reconciles(kind: ArmingKind, note: Notification) -> bool:
        """Whether a snapshot re-reads whole tables to reconcile the lake with them: the
        initial one, and those asked for as such (`request_snapshot(reconcile=True)`:
        start-up, `tidemark resync`). Others (a partition attached, read with a condition)
        must not take the rows they do not read for gone."""
        return kind == "initial" or note.id.startswith(RESYNC_PREFIX)

    def _begins(self, note: Notification) -> tuple[ArmingKind, list[str]] | None:
        """The snapshot kind and tables a notice shows to be under way, if any.

        `STARTED` says so first. Debezium has been seen to deliver a snapshot without its
        `STARTED` notice (a signal read right as streaming starts), so `IN_PROGRESS`, sent as
        each chunk is read, before its rows and before any change streamed inside its
        window, stands in for it when the table is not being armed yet.
        """
        if note.type not in ("STARTED", "IN_PROGRESS"):
            return None
        if note.aggregate == INITIAL:
            return "initial", list(self.tables)
        if note.aggregate != INCREMENTAL:
            return None
        if note.type == "STARTED":
            return "incremental", [self.lake_table(c) for c in note.collections]
        current = note.data.get("current_collection_in_progress")
        return ("incremental", [self.lake_table(current)]) if current else None

    def _apply(self, note: Notification, plan: Plan) -> None:
        record = plan.record
        begun = self._begins(note)
        if begun is not None:
            kind, tables = begun
            for table in tables:
                current = record.arming.get(table)
                if current is not None and note.type != "STARTED":
                    continue  # a chunk of the snapshot under way
                if current is not None and current.kind == kind == "incremental":
                    current.id = note.id  # queued behind the scan under way: same arming
                    continue
                # Whether the lake held rows of it as the snapshot began (when its notice was
                # polled), not now: its own first rows may have committed since.
                held = self.has_rows(table) and (table, note.id) not in self._empty
                reconcile = self._reconciles(kind, note) and (table in plan.seen or held)
                record.arming[table] = Arming(note.id, kind, note.at, reconcile)
                if reconcile:
                    plan.seen[table] = note.id
                logger.info("table %s: %s snapshot %s began", table, kind, note.id)
        elif note.type == "TABLE_SCAN_COMPLETED" and note.aggregate == INCREMENTAL:
            table = self.lake_table(note.data.get("scanned_collection", ""))
            status = note.data.get("status", "SUCCEEDED")
            if status in _SCANNED:
                self._complete(table, plan)
            elif table in record.arming:
                plan.settled.add((table, record.arming.pop(table).id))
                plan.seen.pop(table, None)
                logger.error(
                    "table %s: its snapshot ended with `%s`: the lake may miss changes of it; "
                    "fix the cause and run `tidemark resync --table %s`",
                    table,
                    status,
                    table,
                )
        elif note.type == "COMPLETED" and note.aggregate == INITIAL:
            for table, arming in list(record.arming.items()):
                if arming.kind == "initial":
                    self._complete(table, plan)

    def _complete(self, table: str, plan: Plan) -> None:
        arming = plan.record.arming.pop(table, None)
        if arming is None:
            return
        plan.record.armed[table] = arming.id
        plan.completed[table] = arming

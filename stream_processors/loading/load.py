"""Load one table into the lake from a parallel snapshot, and hand it over to the stream.

The steps (docs/loading.md has the why of each):

1. **Snapshot.** A marker in the change stream, then an exported snapshot after it
   (`connectors/postgres/exported.py`): its point says which streamed changes it holds.
2. **Plan.** The table is cut into ranges (`connectors/postgres/ranges.py`); the plan, the
   point and the batch ids it uses are recorded in the lake (`sinks/loads.py`) before a row
   is read, so a crash leaves a load that the next run resumes, never a second one.
3. **Read and write.** Workers copy the ranges (`connectors/postgres/loader.py`); each block
   becomes snapshot events (`events.py`) that the milestoning core turns into layer rows,
   exactly what a Debezium snapshot gives. A table the lake holds nothing of is written in
   bulk, one commit per layer per range (`bulkload.py`); a table it holds rows of is
   reconciled through the lake's writer API (`reconcile.py`).
4. **Resume.** After a crash the finished ranges are kept; a new snapshot (a second point)
   reads the others, taking only rows unchanged since the first snapshot (as of the first
   point), and every row changed since the first snapshot, anywhere in the table, is read
   at the new point and reconciled; rows deleted in between are deleted at the new point.
   A table rewritten since (VACUUM FULL, CLUSTER: rows moved between ranges) starts over.
5. **Check and hand over.** Optionally a row-by-row comparison with the snapshot (`check`),
   then every layer records the load's watermark and the batch log a row: the runner's gate
   (`gate.py`) lets the table's streamed changes in, minus those the snapshot holds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from tidemark.connectors.postgres.columns import read_plans
from tidemark.connectors.postgres.copyread import ReadTable, TableReader
from tidemark.connectors.postgres.exported import (
    SEQ_SPAN,
    ExportedSnapshot,
    SnapshotPoint,
    exported_snapshot,
)
from tidemark.connectors.postgres.loader import (
    RateLimit,
    read_ranges,
    worker_connection,
)
from tidemark.connectors.postgres.ranges import (
    Range,
    RangePlan,
    column_ranges,
    ctid_ranges,
    key_ranges,
)
from tidemark.kernel.columns import ROW, Layer
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.errors import UsageError
from tidemark.kernel.names import quote, sql_name
from tidemark.sinks.batch_log import TableCounts
from tidemark.sinks.bulk import BulkTable
from tidemark.sinks.lake import Lake
from tidemark.sinks.loads import Kind, LoadLog, LoadState
from tidemark.stream_processors.loading.bulkload import load_bulk
from tidemark.stream_processors.loading.later import check_later
from tidemark.stream_processors.loading.reconcile import Reconciler, source_keys
from tidemark.stream_processors.loading.spec import (
    BatchIds,
    Check,
    LoadOptions,
    LoadProgress,
    LoadResult,
    TableSpec,
    lake_ids,
    xmin_visible,
)

log = logging.getLogger(__name__)


class TableLoad:
    """Loads one table (module docstring); `run` again after a crash resumes it.

    Args:
        spec: the table.
        lake: the lake (a lake object of its own beside a running pipeline's).
        loads: the lake's load log.
        dsn: the source.
        signal_table: the pipeline's signal table (for the marker); None for a table no
            stream follows (a reference table).
        options: workers, cap, ranges, replica.
        ids: batch ids.
        progress: updated as the load goes.
        stop: set to stop after the current block (the next run resumes).
        check: compares the lake with the snapshot before the hand-over.
        check_after_handover: run `check` on a thread of its own after the hand-over (the
            result's `checking`), so the stream starts without waiting for it: start-up's
            loads (a 2M-row table's hash check costs more than its load).
        kind: force `refresh` (a reference table); default by what the lake holds.
    """

    def __init__(
        self,
        spec: TableSpec,
        *,
        lake: Lake,
        loads: LoadLog,
        dsn: str,
        signal_table: str | None,
        options: LoadOptions | None = None,
        ids: BatchIds | None = None,
        progress: LoadProgress | None = None,
        stop: threading.Event | None = None,
        check: Check | None = None,
        check_after_handover: bool = False,
        kind: Kind | None = None,
        epoch: int = 0,
        watermark_column: str | None = None,
    ) -> None:
        self.spec = spec
        self.lake = lake
        self.loads = loads
        self.dsn = dsn
        self.signal_table = signal_table
        self.options = options or LoadOptions()
        self.ids = ids or BatchIds(lake_ids(lake))
        self.progress = progress or LoadProgress(spec.table)
        self.stop = stop or threading.Event()
        self.check = check
        self.check_after_handover = check_after_handover
        self.kind = kind
        self.epoch = epoch
        self.watermark_column = watermark_column
        self.dead_letters: list[DeadLetter] = []
        self._lock = threading.Lock()

    def run(self) -> LoadResult:
        """Load (or resume loading) the table and hand it over.

        Raises:
            SourceUnavailable: the source failed (run again: the load resumes).
            UsageError: the table does not exist or cannot be cut as configured.
            InterruptedError: `stop` was set (run again: the load resumes).
        """
        clock = time.monotonic()
        spec = self.spec
        self.progress.started = self.progress.started or time.monotonic()
        self.progress.phase = "snapshot"
        previous = self.loads.of(spec.table)
        with exported_snapshot(
            self.dsn,
            signal_table=self.signal_table,
            note=f"tidemark: load of {spec.table}",
            replica_dsn=self.options.replica_dsn,
            epoch=self.epoch,
        ) as snapshot:
            conn = worker_connection(snapshot.dsn, snapshot)
            try:
                cursor = conn.cursor()
                plans = read_plans(cursor, spec.schema, spec.name)
                if not plans:
                    raise UsageError(
                        f"source table `{spec.schema}.{spec.name}` does not exist",
                        hint="check sources[].tables",
                    )
                reader = TableReader(
                    spec.table, spec.schema, spec.name, spec.kept(plans), spec.key_columns
                )
                state = self._state(previous, cursor, snapshot)
                result = self._load(state, reader, snapshot, cursor)
            finally:
                conn.close()
        result.seconds = time.monotonic() - clock
        return result

    # -- the plan ------------------------------------------------------------------------
    def _state(
        self, previous: LoadState | None, cursor: Any, snapshot: ExportedSnapshot
    ) -> LoadState:
        """The load to continue (one still loading, same storage) or a new one."""
        relfilenode = _relfilenode(cursor, self.spec)
        if previous is not None and previous.status == "loading" and previous.kind != "refresh":
            if previous.relfilenode == relfilenode:
                previous.points.append(snapshot.point.to_json())
                self.loads.record(previous)
                log.info("table %s: resuming load %s", self.spec.table, previous.load_id)
                return previous
            log.warning(
                "table %s: rewritten since load %s began (VACUUM FULL, CLUSTER): loading again",
                self.spec.table,
                previous.load_id,
            )
        plan = self._plan(cursor)
        bulk = self._bulk("")
        fresh = self.spec.unique_key and not bulk.holds_rows()
        kind: Kind = "initial" if fresh else (self.kind or "rearm")
        base = self.ids.take(len(plan.ranges) + 2) - 1
        state = LoadState(
            table=self.spec.table,
            load_id=uuid.uuid4().hex[:12],
            kind=kind,
            range_kind=plan.kind,
            ranges=[r.where for r in plan.ranges],
            points=[snapshot.point.to_json()],
            batch_base=base,
            source=self.spec.source,
            started_at=datetime.now(UTC).isoformat(),
            relfilenode=relfilenode,
            extra={"estimated_rows": plan.rows, "done": []},
        )
        self.loads.record(state)
        log.info(
            "table %s: %s load %s, %d range(s) by %s",
            self.spec.table,
            kind,
            state.load_id,
            len(plan.ranges),
            plan.kind,
        )
        return state

    def _plan(self, cursor: Any) -> RangePlan:
        spec, options = self.spec, self.options
        workers = max(1, options.workers)
        if not spec.key_columns:  # identical rows must be counted together: one piece
            plan = ctid_ranges(cursor, spec.schema, spec.name, workers=1, rows_per_range=1)
            return RangePlan("whole", (Range(0, "true"),), plan.rows)
        ranges = options.ranges
        if ranges.kind == "key":
            column = ranges.column or (spec.key_columns[0] if len(spec.key_columns) == 1 else None)
            if column is None:
                raise UsageError(
                    f"table `{spec.table}` has a key of several columns: ranges by key need "
                    "one integer column",
                    hint="set snapshot.ranges to ctid, or name the column: {column: <col>}",
                )
            return key_ranges(
                cursor,
                spec.schema,
                spec.name,
                column,
                workers=workers,
                rows_per_range=options.rows_per_range,
            )
        if ranges.kind == "column":
            if ranges.column is None:
                raise UsageError(
                    f"table `{spec.table}`: ranges by column need the column's name",
                    hint="snapshot.ranges: {column: <date column>, by: month}",
                )
            return column_ranges(cursor, spec.schema, spec.name, ranges.column, ranges.period)
        return ctid_ranges(
            cursor, spec.schema, spec.name, workers=workers, rows_per_range=options.rows_per_range
        )

    def _bulk(self, load_id: str) -> BulkTable:
        return BulkTable(
            self.lake,
            self.spec.table,
            layers=self.spec.layers,
            key_columns=self.spec.key_columns or (ROW,),
            load_id=load_id,
        )

    # -- the load ------------------------------------------------------------------------
    def _load(
        self, state: LoadState, reader: TableReader, snapshot: ExportedSnapshot, cursor: Any
    ) -> LoadResult:
        spec, options = self.spec, self.options
        points = [SnapshotPoint.from_json(p) for p in state.points]
        first, last = points[0], points[-1]
        span = SEQ_SPAN // (len(state.ranges) + 2)
        tail = span * len(state.ranges)  # positions of rows reconciled after the ranges
        resumed = len(points) > 1
        self.progress.total_rows = int(state.extra.get("estimated_rows") or 0)
        self.progress.ranges = len(state.ranges)
        self.progress.phase = "reading"
        bulk = self._bulk(state.load_id)
        limit = RateLimit(options.rows_per_second)
        reconciler = Reconciler(
            self.lake,
            table=spec.table,
            source=spec.source,
            key_columns=spec.key_columns,
            layers=spec.layers,
            next_id=self.ids.take,
        )
        if state.kind == "initial":
            read, kept = load_bulk(
                state=state,
                reader=reader,
                snapshot=snapshot,
                bulk=bulk,
                first=first,
                span=span,
                resumed=resumed,
                workers=options.workers,
                limit=limit,
                stop=self.stop,
                progress=self.progress.read,
                on_block=self._letters,
                where=xmin_visible(first) if resumed else None,
                range_size=self.lake.range_size,
                flush_bytes=options.flush_bytes,
            )
        else:
            read, kept = self._reconciled(state, reader, snapshot, reconciler, last, span)
        self.progress.kept = kept
        self._stopped()
        self.lake.reload(spec.table)
        if resumed or state.kind != "initial":
            self.progress.phase = "reconciling"
            if resumed and spec.key_columns:
                self._changed_since(reader, snapshot, reconciler, first, last, tail)
            if spec.key_columns:
                present = source_keys(cursor, reader)
                reconciler.vanished(bulk, present, reader, last, tail + span // 2)
        if self.watermark_column is not None:  # where polling starts (polling.py)
            state.extra["watermark"] = _highest(cursor, spec, self.watermark_column)
        verdict = None
        if self.check is not None and not self.check_after_handover:
            self.progress.phase = "checking"
            verdict = self.check(cursor, spec, None)
        result = self._hand_over(state, bulk, last, reconciler, read, kept, verdict)
        if self.check is not None and self.check_after_handover:
            live = bulk.version(Layer.LIVE)
            result.checking = self._check_later(self.check, snapshot, state, live)
        return result

    def _check_later(
        self, check: Check, snapshot: ExportedSnapshot, state: LoadState, version: int | None
    ) -> Future[Any]:
        """`check` beside the stream (`later.py`); its verdict kept in the load log."""

        def keep(status: str) -> None:
            state.extra["check"] = status
            self.loads.record(state)

        conn = worker_connection(snapshot.dsn, snapshot)  # imports it while it is exported
        return check_later(check, conn, self.spec, version, keep)

    def _hand_over(
        self,
        state: LoadState,
        bulk: BulkTable,
        last: SnapshotPoint,
        reconciler: Reconciler,
        read: int,
        kept: int,
        verdict: Any,
    ) -> LoadResult:
        spec = self.spec
        self.progress.phase = "handing over"
        handover = self.ids.take(1)
        rows = self.progress.rows
        bulk.finish(
            batch_id=handover,
            position=f"{last.commit_part}{0:016x}{SEQ_SPAN - 1:08x}",
            source=spec.source,
            counts=TableCounts(spec.table, changelog=rows, dead_letters=len(self.dead_letters)),
            started_at=datetime.fromisoformat(state.started_at),
        )
        if self.dead_letters:
            self.lake.write_dead_letters(self.dead_letters, batch_id=handover, stage="decode")
        state.status = "done"
        state.rows = rows
        state.finished_at = datetime.now(UTC).isoformat()
        self.loads.record(state)
        self.progress.phase = "done"
        self.progress.finished = time.monotonic()
        return LoadResult(
            spec.table,
            state,
            rows,
            len(self.dead_letters),
            read,
            kept,
            versions=reconciler.versions,
            check=verdict,
        )

    def _reconciled(
        self,
        state: LoadState,
        reader: TableReader,
        snapshot: ExportedSnapshot,
        reconciler: Reconciler,
        point: SnapshotPoint,
        span: int,
    ) -> tuple[int, int]:
        """Every range not done yet, read at `point` and reconciled through the core."""
        done = set(state.extra.get("done") or [])
        todo = [Range(i, w) for i, w in enumerate(state.ranges) if i not in done]
        seqs: dict[int, int] = {}
        held: dict[int, list[Any]] = {}
        bulk = self._bulk(state.load_id)

        def on_block(item: Range, block: ReadTable) -> None:
            self._letters(block)
            if not self.spec.key_columns:
                held.setdefault(item.index, []).append(block.rows)
                return
            with self._lock:
                first_seq = item.index * span + seqs.get(item.index, 0)
                seqs[item.index] = seqs.get(item.index, 0) + block.rows.num_rows
            reconciler.apply(block.rows, point, first_seq)

        def on_range(item: Range) -> None:
            if not self.spec.key_columns:
                import pyarrow as pa

                parts = held.pop(item.index, [])
                rows = pa.concat_tables(parts) if parts else reader.arrow_schema.empty_table()
                reconciler.counts(bulk, rows, point, item.index * span)
            with self._lock:
                done.add(item.index)
                state.extra["done"] = sorted(done)
                self.loads.record(state)

        read_ranges(
            snapshot,
            reader,
            todo,
            workers=self.options.workers,
            on_block=on_block,
            on_range=on_range,
            limit=RateLimit(self.options.rows_per_second),
            stop=self.stop,
            progress=self.progress.read,
        )
        return len(todo), len(state.ranges) - len(todo)

    def _changed_since(
        self,
        reader: TableReader,
        snapshot: ExportedSnapshot,
        reconciler: Reconciler,
        first: SnapshotPoint,
        last: SnapshotPoint,
        first_seq: int,
    ) -> None:
        """Rows changed since the first snapshot, anywhere in the table, at the last point."""
        found: list[Any] = []

        def on_block(item: Range, block: ReadTable) -> None:
            self._letters(block)
            found.append(block.rows)

        read_ranges(
            snapshot,
            reader,
            [Range(0, f"NOT {xmin_visible(first)}")],
            workers=1,
            on_block=on_block,
            on_range=lambda item: None,
            stop=self.stop,
        )
        self._stopped()
        seq = first_seq
        for rows in found:
            reconciler.apply(rows, last, seq)
            seq += rows.num_rows
        if seq > first_seq:
            log.info(
                "table %s: %d row(s) changed since the load began", self.spec.table, seq - first_seq
            )

    # -- helpers -------------------------------------------------------------------------
    def _letters(self, block: ReadTable) -> None:
        if block.dead_letters:
            with self._lock:
                self.dead_letters.extend(block.dead_letters)

    def _stopped(self) -> None:
        if self.stop.is_set():
            raise InterruptedError(f"the load of `{self.spec.table}` was stopped; run to resume")


def _relfilenode(cursor: Any, spec: TableSpec) -> int | None:
    cursor.execute(
        "SELECT c.relfilenode FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (spec.schema, spec.name),
    )
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def _highest(cursor: Any, spec: TableSpec, column: str) -> str | None:
    """The highest finite value of `column` in the snapshot, as Postgres prints it."""
    name = quote(column)
    cursor.execute(
        f"SELECT max({name})::text FROM {sql_name(spec.schema, spec.name)} WHERE isfinite({name})"
    )
    row = cursor.fetchone()
    return None if row is None or row[0] is None else str(row[0])

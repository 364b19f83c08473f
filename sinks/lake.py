"""The `Lake` facade: the typed writer API both runtimes call (`sinks/writer.py`,
docs/sinks.md).

One `commit_batch` writes every table's layers, each in its own Delta commit stamped, per
stream, with `Transaction(f"{stream}:{table}:{layer}", batch_id)` and the stream's replay-guard
watermark, then the batch's dead letters, then the batch log. A crash anywhere in between is
completed by the replay: each layer keeps only what it does not hold yet, so nothing lands
twice. A table whose events cannot be applied goes to the dead letters with the reason, and
the other tables go on (DESIGN §3.3, guarantee 7).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tidemark.kernel.columns import (
    BATCH,
    BATCH_IN,
    GENERATION,
    SOURCE_TS,
    VALID_FROM,
    VALID_TO,
    Layer,
)
from tidemark.kernel.dead_letter import DeadLetter, dead_letters_of
from tidemark.kernel.model import MilestonedTable
from tidemark.sinks import whole_table
from tidemark.sinks.arming import ArmingKeys
from tidemark.sinks.base import CommitResult, StreamCommit
from tidemark.sinks.batch_log import BatchLog, TableCounts
from tidemark.sinks.dead_letters import DeadLetterTable
from tidemark.sinks.delta.buckets import DEFAULT_CACHE_BYTES, BucketCache
from tidemark.sinks.delta.changelog import ChangelogSink
from tidemark.sinks.delta.forensic import ForensicSink
from tidemark.sinks.delta.live import LiveSink
from tidemark.sinks.delta.mor import COPY_ON_WRITE, WriteMode
from tidemark.sinks.delta.table import DeltaHandle, table_uri
from tidemark.sinks.errors import SinkSchemaMismatch, SinkValueError
from tidemark.sinks.loads import LoadLog
from tidemark.sinks.maintenance import Kind, Maintenance
from tidemark.sinks.memory import use_returning_pool
from tidemark.sinks.readers import count_rows, has_deletion_vectors
from tidemark.sinks.rewrite import ColumnChange
from tidemark.sinks.schema import all_nullable
from tidemark.sinks.schema_log import SchemaLog
from tidemark.sinks.streams import ALL_LAYERS, LayerSink, StreamLayers
from tidemark.sinks.watermark import Watermark, table_watermark
from tidemark.sinks.writer import BatchResult as BatchResult
from tidemark.sinks.writer import Refused, Stage
from tidemark.sinks.writer import TablePin as TablePin

log = logging.getLogger(__name__)

# Forensic last: `current_versions` reads it, so a batch half-applied before a crash is
# milestoned again from the state before it, and the replay fills the missing layers.
_ORDER = (Layer.CHANGELOG, Layer.LIVE, Layer.FORENSIC)


_REFUSED = (SinkSchemaMismatch, SinkValueError)
"""Errors that follow from one table's batch (a schema that cannot widen, a value that
cannot be written): that table's events go to the dead letters, the other tables go on."""


class Lake(StreamLayers):
    """All Delta tables under one lake root.

    Args:
        root: local path or `s3://bucket/prefix`.
        app_id: the pipeline's id; Delta txn app ids derive from it.
        storage_options: delta-rs storage options (endpoint, credentials, ...).
        maintenance: run background compaction/vacuum (see `sinks.maintenance`).
        cache_bytes: bound of the in-memory bucket cache shared by every live and forensic
            layer, in bytes.
        range_size: keys per bucket for tables with one integer key (fixed at creation).
        parallelism: tables committed at once (and changelog beside live within a table).
        write_modes: live and forensic write mode per lake table, `*` for the rest
            (default copy-on-write); fixed when a table is created.
    """

    def __init__(
        self,
        root: str,
        *,
        app_id: str,
        storage_options: Mapping[str, str] | None = None,
        maintenance: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        range_size: int | None = None,
        parallelism: int = 2,
        write_modes: Mapping[str, WriteMode] | None = None,
    ) -> None:
        use_returning_pool()  # what a batch frees goes back to the system (sinks/memory.py)
        self.root = root
        self.write_modes = dict(write_modes or {})
        self.app_id = app_id
        self.storage_options = dict(storage_options or {})
        self.cache = BucketCache(cache_bytes)
        self.range_size = range_size
        self._sinks: dict[tuple[str, Layer], LayerSink] = {}
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="tm-table")
        self._side = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="tm-layer")
        self.batch_log = BatchLog(root, app_id=app_id, storage_options=self.storage_options)
        self.dead_letters = DeadLetterTable(
            root, app_id=app_id, storage_options=self.storage_options
        )
        self.schema_log = SchemaLog(root, app_id=app_id, storage_options=self.storage_options)
        self.arming = ArmingKeys(root, app_id=app_id, storage_options=self.storage_options)
        self.maintenance: Maintenance | None = None
        if maintenance:
            self.maintenance = Maintenance(self._maintained, storage_options=self.storage_options)
            self.maintenance.start()

    def sink(self, table: str, layer: Layer) -> LayerSink:
        """The opened writer of one layer of one table."""
        if (table, layer) not in self._sinks:
            uri = table_uri(self.root, layer.value, table)
            app = f"{self.app_id}:{table}:{layer.value}"
            sink: LayerSink
            if layer is Layer.CHANGELOG:
                sink = ChangelogSink(uri, app_id=app, storage_options=self.storage_options)
            else:
                kind = LiveSink if layer is Layer.LIVE else ForensicSink
                sink = kind(
                    uri,
                    app_id=app,
                    storage_options=self.storage_options,
                    cache=self.cache,
                    range_size=self.range_size,
                    write_mode=self.write_mode(table),
                )
            sink.open()
            self._sinks[(table, layer)] = sink
        return self._sinks[(table, layer)]

    def write_mode(self, table: str) -> WriteMode:
        """The configured write mode of `table`'s live and forensic layers."""
        return self.write_modes.get(table) or self.write_modes.get("*") or COPY_ON_WRITE

    def reload(self, table: str) -> None:
        """Forget `table`'s opened layer writers (cached rows, bucket layout): the next use
        opens them from storage again, and the batch log is read again (new batches take ids
        above the loads'). For commits made beside them (`sinks/bulk.py`)."""
        for layer in Layer:
            sink = self._sinks.pop((table, layer), None)
            if sink is not None:
                sink.close()
        self.cache = BucketCache(self.cache.max_bytes)
        self.batch_log.handle.refresh()

    def _maintained(self) -> list[tuple[str, Kind]]:
        """What the maintenance thread compacts: every append-only table and history, and
        the merge-on-read layers."""
        targets: list[tuple[str, Kind]] = []
        for (_, layer), sink in list(self._sinks.items()):
            if sink.handle.dt is None:
                continue
            if not isinstance(sink, ChangelogSink) and sink.mor is not None:
                targets.append((sink.handle.uri, f"mor_{layer.value}"))  # type: ignore[arg-type]
            elif layer is not Layer.LIVE:
                kind: Kind = "forensic" if layer is Layer.FORENSIC else "append"
                targets.append((sink.handle.uri, kind))
        for handle in (self.batch_log.handle, *self.dead_letters.handles()):
            if handle.dt is not None:
                targets.append((handle.uri, "append"))
        return targets

    def applied_position(
        self, table: str, layers: frozenset[Layer] = ALL_LAYERS, stream: str | None = None
    ) -> str | None:
        """The replay guard's watermark of `table` for `stream` (default this lake's own app
        id): the lowest position applied to the `layers` the table is kept in, the one the
        core milestones at; None while any of them holds nothing (a process killed after the
        changelog's first commit, before live and forensic existed)."""
        positions = [self._layer_position(table, layer, stream) for layer in layers]
        if not positions or None in positions:
            return None
        return min(p for p in positions if p is not None)

    def pin(self, table: str, layer: Layer) -> TablePin | None:
        """Where one layer of a table stands now (None before its first commit): what a gold
        refresh reads. Taken between two batches it is a transaction-consistent cut."""
        handle = self.sink(table, layer).handle
        if handle.dt is None:
            handle.open()
        if handle.dt is None:
            return None
        return TablePin(
            handle.uri,
            handle.dt.version(),
            handle.applied_batch(),
            handle.applied_position(),
            str(handle.dt.metadata().id),
        )

    def current_versions(
        self, table: str, keys: pa.Table, layers: frozenset[Layer] = ALL_LAYERS
    ) -> pa.Table | None:
        """The open forensic versions of `keys` (key columns = the columns of `keys`).

        A table kept without a forensic layer (`layers`) answers from live, renamed to the
        forensic columns (`_tm_valid_from`, `_tm_batch_in`), so the core can still drop
        replays. A forensic layer not created yet holds nothing: the replay of a first batch
        that died before it must reach it, even where live already holds the rows.
        """
        forensic = self.sink(table, Layer.FORENSIC)
        assert isinstance(forensic, ForensicSink)
        if forensic.handle.dt is not None:
            return forensic.lookup(keys, keys.column_names)
        if Layer.FORENSIC in layers:
            return None
        live = self.sink(table, Layer.LIVE)
        assert isinstance(live, LiveSink)
        rows = live.lookup(keys, keys.column_names)
        if rows is None:
            return None
        renames = {SOURCE_TS: VALID_FROM, BATCH: BATCH_IN}
        return rows.rename_columns([renames.get(name, name) for name in rows.column_names])

    def open_keys(
        self, table: str, key_columns: Sequence[str], layers: frozenset[Layer] = ALL_LAYERS
    ) -> pa.Table | None:
        """The keys the lake holds a current row of: forensic's open versions (forensic
        commits last, so a batch half-applied before a crash still shows there), else live's
        rows; None when the table is kept in neither or holds nothing yet."""
        keys = list(key_columns)
        if Layer.FORENSIC in layers:
            handle = self.sink(table, Layer.FORENSIC).handle
            if handle.dt is None:
                return None
            rows = handle.read(ds.field(VALID_TO).is_null(), columns=[*keys, VALID_TO])
            return rows.select(keys)  # read applies deletion vectors (merge-on-read)
        if Layer.LIVE in layers:
            handle = self.sink(table, Layer.LIVE).handle
            if handle.dt is None:
                return None
            return handle.read(columns=keys)
        return None

    def holds_rows(self, table: str, layers: frozenset[Layer] = ALL_LAYERS) -> bool:
        """Whether live (or forensic) of `table` holds any row (Delta metadata only)."""
        for layer in (Layer.LIVE, Layer.FORENSIC):
            if layer not in layers:
                continue
            handle = self.sink(table, layer).handle
            if handle.dt is None:
                continue
            if has_deletion_vectors(handle.dt):  # files' row counts include deleted rows
                if count_rows(handle.uri, self.storage_options):
                    return True
                continue
            actions = pa.table(handle.dt.get_add_actions(flatten=True))
            if "num_records" in actions.column_names and (
                pc.sum(actions.column("num_records")).as_py() or 0
            ):
                return True
        return False

    def roll_back_unlogged(self, tables: Sequence[str]) -> list[str]:
        """Make every layer of `tables` hold exactly the batches the batch log holds.

        A process killed inside `commit_batch` can leave a batch in some layers (changelog and
        live commit before forensic, the batch log last). Replaying the same events fills the
        missing layers; but when what comes again differs (a snapshot redone on a new slot,
        rows gone meanwhile) those layers would keep rows nothing else knows. So at start the
        batch log, the lake's commit point, wins: layers ahead of it are rolled back. Call it
        before the layers are written; returns the `table/layer`s rolled back.
        """
        logged = self.batch_log.last_batch_id()
        rolled = []
        for table in tables:
            for layer in Layer:
                handle = DeltaHandle(
                    table_uri(self.root, layer.value, table),
                    app_id=f"{self.app_id}:{table}:{layer.value}",
                    storage_options=self.storage_options,
                )
                handle.open()
                if handle.roll_back_to(logged):
                    rolled.append(f"{table}/{layer.value}")
                    self._sinks.pop((table, layer), None)
        if rolled:
            self.cache = BucketCache(self.cache.max_bytes)
        return rolled

    def source_records(self) -> dict[str, str]:
        """source -> what the lake holds of it (`SourceRecord` JSON), from the last batch."""
        return self.batch_log.last_sources()

    def last_batch_id(self) -> int:
        """The last batch recorded in the batch log, 0 when empty."""
        return self.batch_log.last_batch_id()

    def watermark(self) -> Watermark | None:
        """The last transaction-consistent batch (`sinks/watermark.py`); None if not kept."""
        self.batch_log.handle.refresh()
        dt = self.batch_log.handle.dt
        return None if dt is None else table_watermark(dt)

    def highest_batch_id(self) -> int:
        """The highest batch id the batch log or any table layer holds (0 when none).

        A process killed inside `commit_batch` can leave batch N in some layers but not in
        the batch log. The next process re-forms its batches from what the source delivers
        again, so its batch N may hold other events (a later cut); a layer that holds the
        old N would skip the new one by its txn and lose the difference. New batches
        therefore take ids above this (replayed events are then dropped per layer by
        position). Local lakes are listed on disk; object stores use the opened layers.
        """
        highest = self.last_batch_id()
        if "://" not in self.root:
            for layer in Layer:
                folder = os.path.join(os.path.abspath(self.root), layer.value)
                names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
                for name in names:
                    if os.path.isdir(os.path.join(folder, name, "_delta_log")):
                        self.sink(name, layer)
        for sink in list(self._sinks.values()):
            highest = max(highest, sink.handle.applied_batch())
        return max(highest, self._reserved_by_loads())

    def _reserved_by_loads(self) -> int:
        """The highest batch id a parallel load reserved (`sinks/loads.py`). A load killed
        before its hand-over leaves range commits stamped with its ids in the layers (under
        txns of their own) and nothing in the batch log: ids reused after it put two batches
        under one id, and a read at the consistent cut missed the later one's rows."""
        states = LoadLog(self.root, app_id=self.app_id, storage_options=self.storage_options)
        return max((s.handover_batch for s in states.latest().values()), default=0)

    def write_dead_letters(
        self,
        letters: Sequence[DeadLetter],
        *,
        batch_id: int,
        stage: Stage = "decode",
        stream: str | None = None,
    ) -> int:
        """Store dead letters of one batch (idempotent per stage and batch); how many."""
        return self.dead_letters.append(letters, batch_id=batch_id, stage=stage, app=stream)

    def commit_batch(
        self,
        batch_id: int,
        tables: Sequence[MilestonedTable],
        *,
        source_positions: Mapping[str, str],
        started_at: datetime,
        layers: Mapping[str, frozenset[Layer]] | None = None,
        closed_by: str | None = None,
        streams: Sequence[StreamCommit] = (),
        dead_letters: Sequence[DeadLetter] = (),
        refused: Sequence[Refused] = (),
        sources: Mapping[str, str] | None = None,
        split: Mapping[str, str] | None = None,
        consistent: bool | None = None,
    ) -> BatchResult:
        """Commit one batch: every table's layers, its dead letters, then the batch log.

        Returns only when all of it is durable; offsets may be acknowledged then.
        `closed_by` (what closed the batch) goes to the batch log, and `sources` (source ->
        `SourceRecord` JSON: what the lake holds of each source) with it; so do `split` and
        `consistent`: they mark the parts of a source transaction committed over several
        batches, and the watermark.

        Args:
            streams: the streams the batch applies, each with its txn version and position
                (several Kafka partitions); empty: this lake's own app id alone, at
                `batch_id` and each table's last position (the embedded runtime).
            dead_letters: the decoder's dead letters of the batch (stage `decode`).
            refused: tables the runtime could not milestone (stage `apply`).

        A table the lake cannot take for good (a terminal error naming it: a column that
        cannot widen) goes to the dead letters too, and the other tables are committed.

        Raises:
            SinkCommitConflict: a layer kept losing to concurrent writers (transient).
            SinkError: storage failed; the batch can be replayed as a whole.
        """
        clock = time.perf_counter()
        first = streams[0].app if streams else None
        commits: list[CommitResult] = []
        counts: dict[str, TableCounts] = {}
        letters: list[DeadLetter] = []
        for r in refused:
            table, events = r.changes.table, r.changes.events
            letters += _refusal(table, r.changes.key_columns, events, r.reason)
            counts[table] = TableCounts(table, dead_letters=events.num_rows)
        jobs: list[tuple[MilestonedTable, list[LayerSink]]] = []
        for batch in map(all_nullable, tables):
            batch = self.with_generation(batch)
            wanted = (layers or {}).get(batch.table, ALL_LAYERS)
            try:
                self._preflight(batch, wanted, streams)
            except _REFUSED as exc:
                letters += self._refuse(batch, exc, batch_id, counts)
                continue
            jobs.append((batch, [self.sink(batch.table, lay) for lay in _ORDER if lay in wanted]))
            counts[batch.table] = _counts(batch)
        # Tables are independent: commit them side by side (delta-rs releases the GIL while
        # it writes). Within a table, changelog and live go together, forensic strictly last.
        futures = [
            (b, self._pool.submit(self._commit_table, b, sinks, batch_id, streams))
            for b, sinks in jobs
        ]
        for batch, future in futures:
            try:
                commits.extend(future.result())
            except _REFUSED as exc:  # e.g. delta-rs refused the batch's schema or a value
                letters += self._refuse(batch, exc, batch_id, counts)
        self.dead_letters.append(dead_letters, batch_id=batch_id, stage="decode", app=first)
        self.dead_letters.append(letters, batch_id=batch_id, stage="apply", app=first)
        logged = self.batch_log.append(
            batch_id,
            source_positions=source_positions,
            counts=list(counts.values()),
            started_at=started_at,
            closed_by=closed_by,
            app=first,
            sources=sources,
            split=split,
            consistent=consistent,
        )
        skipped = not logged and all(c.skipped for c in commits)
        return BatchResult(
            batch_id,
            tuple(counts.values()),
            tuple(commits),
            len(letters),
            skipped,
            datetime.now(UTC),
            time.perf_counter() - clock,
        )

    def with_generation(self, batch: MilestonedTable) -> MilestonedTable:
        """Stamp new forensic versions with the table's generation (docs/schema-changes.md)."""
        inserts = batch.forensic_inserts
        if GENERATION in inserts.column_names:
            inserts = inserts.drop_columns([GENERATION])
        generation = pa.scalar(self.schema_log.generation(batch.table), pa.int64())
        inserts = inserts.append_column(GENERATION, pa.repeat(generation, inserts.num_rows))
        return dataclasses.replace(batch, forensic_inserts=inserts)

    def current_rows(self, table: str, layers: frozenset[Layer] = ALL_LAYERS) -> pa.Table | None:
        """Every current row of `table` (`sinks/whole_table.py`); None when none is kept."""
        return whole_table.current_rows(self, table, layers)

    def key_columns(self, table: str) -> tuple[str, ...] | None:
        """The key columns the lake keeps `table` by, when it holds the table."""
        return whole_table.key_columns(self, table)

    def change_column(
        self,
        table: str,
        change: ColumnChange,
        *,
        batch_id: int,
        position: str,
        layers: frozenset[Layer] = ALL_LAYERS,
        key_columns: tuple[str, ...] = (),
    ) -> int:
        """Rename or widen one column in every layer of `table` (`sinks/whole_table.py`)."""
        return whole_table.change_column(
            self,
            table,
            change,
            batch_id=batch_id,
            position=position,
            layers=layers,
            key_columns=key_columns,
        )

    def _refuse(
        self,
        batch: MilestonedTable,
        exc: SinkSchemaMismatch | SinkValueError,
        batch_id: int,
        counts: dict[str, TableCounts],
    ) -> list[DeadLetter]:
        """A table the lake cannot take: its events become dead letters (stage `apply`)."""
        log.error(
            "batch %s, table %s: %s; its %d events go to the dead letters",
            batch_id,
            batch.table,
            exc.message,
            batch.changelog.num_rows,
        )
        counts[batch.table] = TableCounts(batch.table, dead_letters=batch.changelog.num_rows)
        return _refusal(batch.table, batch.key_columns, batch.changelog, exc.message)

    def _commit_table(
        self,
        batch: MilestonedTable,
        sinks: list[LayerSink],
        batch_id: int,
        streams: Sequence[StreamCommit],
    ) -> list[CommitResult]:
        try:
            return self._commit_layers(batch, sinks, batch_id, streams)
        except (pa.ArrowException, ArithmeticError, ValueError) as exc:
            # A value our writers cannot handle: retrying fails the same way, so the table's
            # events become dead letters rather than a crash loop. Anything else (a bug, a
            # process being stopped) still propagates, and the batch is replayed.
            log.exception("batch %s, table %s: writing failed", batch_id, batch.table)
            raise SinkValueError(
                f"writing table `{batch.table}` failed: {type(exc).__name__}: {exc}",
                hint="the batch's events of this table go to the dead letters",
                table=batch.table,
                batch_id=batch_id,
            ) from exc

    def _commit_layers(
        self,
        batch: MilestonedTable,
        sinks: list[LayerSink],
        batch_id: int,
        streams: Sequence[StreamCommit],
    ) -> list[CommitResult]:
        for sink in sinks:
            parts = [s.in_layer(batch.table, sink.layer.value) for s in streams]
            sink.write(batch, batch_id=batch_id, streams=parts)
        early = [s for s in sinks if s.layer is not Layer.FORENSIC]
        late = [s for s in sinks if s.layer is Layer.FORENSIC]
        if len(early) == 2:
            side = self._side.submit(early[0].commit)
            try:
                results = [early[1].commit()]
            finally:
                wait([side])  # a failure never leaves the other commit running behind it
            results.append(side.result())
        else:
            results = [s.commit() for s in early]
        return results + [s.commit() for s in late]

    def _preflight(
        self, batch: MilestonedTable, layers: frozenset[Layer], streams: Sequence[StreamCommit]
    ) -> None:
        """Raise before any layer is written if one cannot take the batch: a schema that
        cannot widen (`SinkSchemaMismatch`), or, for a commit of several streams, a stream
        whose layers are apart (a crash between them: replay that stream alone first; the
        layers' own guard needs each row's stream, which such a commit does not carry)."""
        incoming = {
            Layer.CHANGELOG: batch.changelog,
            Layer.LIVE: batch.live_upserts,
            Layer.FORENSIC: batch.forensic_inserts,
        }
        for layer in layers:
            self.sink(batch.table, layer).handle.fit(incoming[layer])
        self.check_streams_agree(batch.table, layers, streams)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until a maintenance round has finished (tests, benchmarks)."""
        if self.maintenance is not None:
            self.maintenance.run_once_and_wait(timeout)

    def close(self) -> None:
        """Stop maintenance and drop caches."""
        if self.maintenance is not None:
            self.maintenance.stop()
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
        self._pool.shutdown(wait=True)
        self._side.shutdown(wait=True)


def _counts(batch: MilestonedTable) -> TableCounts:
    return TableCounts(
        batch.table,
        changelog=batch.changelog.num_rows,
        live_upserts=batch.live_upserts.num_rows,
        live_deletes=batch.live_deletes.num_rows,
        forensic_inserts=batch.forensic_inserts.num_rows,
        forensic_closes=batch.forensic_closes.num_rows,
    )


def _refusal(table: str, keys: Sequence[str], rows: pa.Table, reason: str) -> list[DeadLetter]:
    return dead_letters_of(table, keys, rows, reason=reason, origin="sinks.apply")

"""One Delta table as a layer writer sees it: create, read back the txn, commit once.

Every commit carries, per stream it applies (`StreamCommit`; by default the handle's own app
id), `Transaction(app_id, batch_id)` and the stream's replay-guard watermark (the highest
source position applied, `watermarks.py`), so after a crash the handle tells which batch the
table already holds and which events it has. The commit metadata says the same for people
and older readers: `tidemark.app` and `tidemark.batch` of the first stream, `tidemark.position`
the highest watermark of the commit's streams. delta-rs accepts a lower txn version without
complaint; the writers check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.transaction import AddAction

from tidemark.kernel.names import location
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.delta.watermarks import position_transactions, read_position
from tidemark.sinks.errors import SinkError, SinkLogDamaged, delta_errors
from tidemark.sinks.schema import align

log = logging.getLogger(__name__)

POSITION_KEY = "tidemark.position"
BATCH_KEY = "tidemark.batch"
APP_KEY = "tidemark.app"
_MAINTENANCE = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})
_HISTORY_SCAN = 200  # commits to look back for our metadata (maintenance commits carry none)


def open_table(uri: str, storage_options: Mapping[str, str] | None = None) -> DeltaTable | None:
    """An existing Delta table for reading, None when there is none at `uri` yet (nothing
    there, or a first commit still being written or cut off).

    Raises:
        SinkLogDamaged: a later commit cannot be read while earlier versions can (names the
            table and `tidemark repair`, which restores the last good version).
        SinkError: storage failed.
    """
    options = dict(storage_options or {}) or None
    try:
        with delta_errors(uri):
            if not DeltaTable.is_deltatable(uri, storage_options=options):
                return None
            return DeltaTable(uri, storage_options=options)
    except SinkLogDamaged:
        if not first_version_loads(uri, storage_options):
            return None
        raise


def first_version_loads(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
    """True when version 0 of the table at `uri` loads: a damaged later commit can then be
    set aside (`tidemark repair`); otherwise the table has no readable state at all yet."""
    try:
        DeltaTable(uri, version=0, storage_options=dict(storage_options or {}) or None)
    except Exception:  # any failure: version 0 does not load
        return False
    return True


def raise_if_damaged(uri: str, storage_options: Mapping[str, str] | None = None) -> None:
    """Raise `SinkLogDamaged` when the Delta log at `uri` has a damaged commit after a good
    one; nothing otherwise (a table not there, or failing for another reason, is the
    caller's to report)."""
    try:
        open_table(uri, storage_options)
    except SinkLogDamaged:
        raise
    except SinkError:
        return


def table_uri(root: str, *parts: str) -> str:
    """`root/part/...` for a local path (made absolute) or an object-store URL."""
    return location(root, *parts)


def scan_table(
    dt: DeltaTable, *, columns: Sequence[str] | None = None, predicate: str | None = None
) -> pa.Table:
    """The table's rows through delta-rs `scan()` (which applies deletion vectors), with the
    types a pyarrow dataset of the table gives (`scan` answers `string_view` for strings,
    which the writers' batches, in `string`, cannot be concatenated with)."""
    table = pa.table(dt.scan(columns=list(columns) if columns else None, predicate=predicate))
    schema = pa.schema(dt.schema().to_arrow())
    return table.cast(pa.schema([schema.field(name) for name in table.column_names]))


class DeltaHandle:
    """A lazily created Delta table with idempotent, position-stamped commits.

    Args:
        uri: table location (local path or `s3://...`).
        app_id: the Delta transaction app id of this writer.
        storage_options: passed to delta-rs (credentials, endpoint, ...).
        partition_by: partition columns used when the table is created.
        configuration: Delta table properties used when the table is created.
    """

    def __init__(
        self,
        uri: str,
        *,
        app_id: str,
        storage_options: Mapping[str, str] | None = None,
        partition_by: Sequence[str] = (),
        configuration: Mapping[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.app_id = app_id
        self.storage_options = dict(storage_options or {})
        self.partition_by = list(partition_by)
        self.configuration = dict(configuration or {})
        self.dt: DeltaTable | None = None
        # watermark per txn app id, with the table version it was read (or written) at
        self._watermarks: dict[str, tuple[int, str | None]] = {}

    def open(self) -> None:
        """Load the table if it exists (it is created by the first commit)."""
        with delta_errors(self.uri):
            if DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options or None):
                self.dt = DeltaTable(self.uri, storage_options=self.storage_options or None)

    def refresh(self) -> None:
        """Catch up with commits made by others (maintenance, other workers)."""
        if self.dt is None:
            self.open()
        else:
            with delta_errors(self.uri):
                self.dt.update_incremental()

    @property
    def schema(self) -> pa.Schema | None:
        return None if self.dt is None else pa.schema(self.dt.schema().to_arrow())

    @property
    def description(self) -> str | None:
        return None if self.dt is None else self.dt.metadata().description

    def applied_batch(self, app_id: str | None = None) -> int:
        """The last batch id committed by `app_id` (default this handle's), 0 if none."""
        if self.dt is None:
            return 0
        with delta_errors(self.uri):
            return self.dt.transaction_version(app_id or self.app_id) or 0

    def applied_position(self, app_id: str | None = None) -> str | None:
        """The replay-guard watermark of `app_id` (default this handle's): the highest source
        position that stream applied to this table; None if it applied nothing yet."""
        if self.dt is None:
            return None
        app = app_id or self.app_id
        version = self.dt.version()
        known = self._watermarks.get(app)
        if known is not None and known[0] == version:
            return known[1]
        with delta_errors(self.uri):
            position = read_position(self.dt, app)
            if position is None and app == self.app_id:
                position = self._metadata_position()
        self._watermarks[app] = (version, position)
        return position

    def _metadata_position(self) -> str | None:
        """A table written before watermarks were txn actions: its last own commit's
        `tidemark.position` (exact for a table with one writer, the embedded runtime's)."""
        assert self.dt is not None
        for commit in self.dt.history(_HISTORY_SCAN):
            if commit.get(APP_KEY) == self.app_id and POSITION_KEY in commit:
                return str(commit[POSITION_KEY]) or None
        return None

    def roll_back_to(self, batch_id: int) -> bool:
        """Undo this writer's commits of batches above `batch_id` (a batch a killed process
        left in this layer but never logged); True when there were any.

        Restores the table to its version after our last commit of a batch at or below
        `batch_id` (emptied when there is none), in a commit that sets this writer's
        replay-guard watermark back to what it was there, so the batch's events are applied
        again when they come again. The txn version stays where it was: new batches take ids
        above it (`Lake.highest_batch_id`), never the one undone.
        """
        if self.dt is None or self.applied_batch() <= batch_id:
            return False
        target: int | None = None
        ahead = False  # a commit of ours above `batch_id` newer than any at or below it
        with delta_errors(self.uri):
            for commit in self.dt.history(_HISTORY_SCAN):
                if commit.get(APP_KEY) != self.app_id:
                    continue
                if int(commit.get(BATCH_KEY) or 0) <= batch_id:
                    target = int(commit["version"])
                    break
                ahead = True
            if not ahead:  # undone already
                return False
            position = ""
            if target is not None:
                options = self.storage_options or None
                then = DeltaTable(self.uri, version=target, storage_options=options)
                position = read_position(then, self.app_id) or ""
            props = CommitProperties(
                app_transactions=position_transactions(self.app_id, position),
                custom_metadata={
                    APP_KEY: self.app_id,
                    BATCH_KEY: str(batch_id),
                    POSITION_KEY: position,
                },
            )
            if target is None:
                self.dt.delete(commit_properties=props)
            else:
                self.dt.restore(target, commit_properties=props)
            self.dt.update_incremental()
        self._watermarks.clear()
        log.warning(
            "%s: rolled back to batch %s (a later one was never logged)", self.uri, batch_id
        )
        return True

    def only_maintenance_since(
        self, version: int | None, *, ours: int | None = None, app_id: str | None = None
    ) -> bool:
        """True if every commit after `version` only compacted or vacuumed (no row changed),
        besides our own commit of batch `ours` (recorded under `app_id`, default ours)."""
        if self.dt is None or version is None:
            return False
        newer = self.dt.version() - version
        if newer <= 0:
            return True
        with delta_errors(self.uri):
            commits = self.dt.history(newer)
        return all(
            c.get("operation") in _MAINTENANCE
            or (
                ours is not None
                and c.get(APP_KEY) == (app_id or self.app_id)
                and c.get(BATCH_KEY) == str(ours)
            )
            for c in commits
        )

    def read(
        self,
        expression: ds.Expression | None = None,
        *,
        partitions: list[tuple[str, str, Any]] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows matching `expression`; `partitions` (delta-rs filters) limit the files listed;
        `columns` (which must hold every column `expression` and `partitions` name) limits
        what is read.

        Listing only the wanted partitions matters: building a dataset over every file of a
        big table costs more than reading a few buckets.
        """
        assert self.dt is not None
        wanted = list(columns) if columns else None
        with delta_errors(self.uri):
            if "deletionVectors" in (self.dt.protocol().reader_features or []):
                # A merge-on-read table cannot be a pyarrow dataset (its files hold deleted
                # rows): delta-rs scans it whole, then the filters apply to the rows.
                table = scan_table(self.dt, columns=wanted)
                for column, op, value in partitions or []:
                    table = table.filter(_partition_filter(table, column, op, value))
                return table if expression is None else table.filter(expression)
            dataset = self.dt.to_pyarrow_dataset(file_pruning_predicate=partitions)
            return dataset.to_table(columns=wanted, filter=expression)

    def commit(
        self,
        data: pa.Table | pa.RecordBatchReader,
        *,
        batch_id: int,
        position: str | None,
        mode: Literal["append", "overwrite"] = "append",
        predicate: str | None = None,
        evolves: bool = False,
        description: str | None = None,
        streams: Sequence[StreamCommit] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write `data` in one Delta commit stamped with (app id, batch id) and `position`,
        or with each of `streams` (txn app ids of this table) when given; `metadata` is more
        commit metadata (the batch log's consistent cut).

        Raises:
            SinkCommitConflict: a concurrent writer won; retry the batch.
            SinkError: any other storage failure.
        """
        props, marks = self._properties(batch_id, position, streams, metadata)
        with delta_errors(self.uri, batch_id=batch_id):
            if self.dt is None:
                write_deltalake(
                    self.uri,
                    data,
                    mode="append",
                    partition_by=self.partition_by or None,
                    configuration=self.configuration or None,
                    description=description,
                    storage_options=self.storage_options or None,
                    commit_properties=props,
                )
                self.dt = DeltaTable(self.uri, storage_options=self.storage_options or None)
            elif mode == "overwrite":
                write_deltalake(
                    self.dt,
                    data,
                    mode="overwrite",
                    predicate=predicate,
                    schema_mode="merge" if evolves else None,
                    commit_properties=props,
                )
            else:
                write_deltalake(
                    self.dt,
                    data,
                    mode="append",
                    schema_mode="merge" if evolves else None,
                    commit_properties=props,
                )
        self._committed(batch_id, marks)

    def overwrite(
        self, data: pa.Table | pa.RecordBatchReader, *, batch_id: int, position: str | None
    ) -> None:
        """Replace the whole table, schema included, in one commit with the usual stamps
        (renamed or widened columns, `sinks/rewrite.py`). Partitioning, table properties
        and description stay.

        Raises:
            SinkCommitConflict: a concurrent writer won; retry.
            SinkError: any other storage failure.
        """
        assert self.dt is not None
        props, marks = self._properties(batch_id, position, ())
        with delta_errors(self.uri, batch_id=batch_id):
            write_deltalake(
                self.dt,
                data,
                mode="overwrite",
                schema_mode="overwrite",
                partition_by=self.dt.metadata().partition_columns or None,
                commit_properties=props,
            )
            self.dt.update_incremental()
        self._committed(batch_id, marks)

    def set_properties(self, properties: Mapping[str, str]) -> None:
        """Change Delta table properties (e.g. the statistics columns after a rename)."""
        assert self.dt is not None
        with delta_errors(self.uri):
            self.dt.alter.set_table_properties(dict(properties))
            self.dt.update_incremental()

    def set_description(self, description: str) -> None:
        """Replace the table's description (where the sinks keep bucketing and keys)."""
        assert self.dt is not None
        with delta_errors(self.uri):
            self.dt.alter.set_table_description(description)
            self.dt.update_incremental()

    def replace_files(
        self,
        actions: list[AddAction],
        *,
        partitions: list[tuple[str, str, Any]],
        batch_id: int,
        position: str | None,
        streams: Sequence[StreamCommit] = (),
    ) -> None:
        """Commit files written beside the table (`FileWriter`) in place of every file in
        `partitions` (delta-rs filters), with the same stamps as `commit`.

        Raises:
            SinkCommitConflict: a concurrent writer won; retry the batch.
            SinkError: any other storage failure.
        """
        assert self.dt is not None
        props, marks = self._properties(batch_id, position, streams)
        with delta_errors(self.uri, batch_id=batch_id):
            self.dt.create_write_transaction(
                [*actions],
                "overwrite",
                self.dt.schema(),
                partition_by=self.partition_by or None,
                partition_filters=partitions,
                commit_properties=props,
            )
            self.dt.update_incremental()  # unlike write_deltalake, this leaves dt behind
        self._committed(batch_id, marks)

    def _committed(self, batch_id: int, marks: Sequence[StreamCommit]) -> None:
        assert self.dt is not None
        version = self.dt.version()
        self._watermarks = {  # others' watermarks may have moved: read them again
            mark.app: (version, mark.position) for mark in marks if mark.position is not None
        }
        log.debug("committed batch %s to %s (version %s)", batch_id, self.uri, version)

    def _properties(
        self,
        batch_id: int,
        position: str | None,
        streams: Sequence[StreamCommit],
        extra: Mapping[str, str] | None = None,
    ) -> tuple[CommitProperties, list[StreamCommit]]:
        """The txn actions and metadata of a commit, and each stream's part of it with its
        watermark after the commit (a replay never moves a watermark back)."""
        marks = []
        actions: list[Transaction] = []
        for stream in streams or (StreamCommit(self.app_id, batch_id, position),):
            actions.append(Transaction(stream.app, stream.batch_id))
            reached = stream.position or None
            if reached is not None:  # else the stream's last watermark actions stay in force
                applied = self.applied_position(stream.app)
                if applied is not None and reached < applied:
                    reached = applied
                actions.extend(position_transactions(stream.app, reached))
            marks.append(StreamCommit(stream.app, stream.batch_id, reached))
        first = marks[0]
        metadata = {**(extra or {}), BATCH_KEY: str(first.batch_id), APP_KEY: first.app}
        reached_all = [m.position for m in marks if m.position is not None]
        if reached_all:  # how far the table got, for `status` and people
            metadata[POSITION_KEY] = max(reached_all)
        return CommitProperties(app_transactions=actions, custom_metadata=metadata), marks

    def stamps(
        self, batch_id: int, position: str | None, streams: Sequence[StreamCommit] = ()
    ) -> tuple[dict[str, int], dict[str, str], list[StreamCommit]]:
        """What a commit carries, whoever writes it (delta-rs, or the merge-on-read writer's
        own JSON commits): its txn actions (app id -> version, watermarks included), its
        commit metadata, and each stream's part of it (for `record_commit`)."""
        props, marks = self._properties(batch_id, position, streams)
        txns = {t.app_id: t.version for t in props.app_transactions or []}
        return txns, dict(props.custom_metadata or {}), marks

    def record_commit(self, batch_id: int, marks: Sequence[StreamCommit]) -> None:
        """A commit written beside delta-rs landed: catch `dt` up and keep its watermarks."""
        with delta_errors(self.uri, batch_id=batch_id):
            if self.dt is None:
                self.dt = DeltaTable(self.uri, storage_options=self.storage_options or None)
            else:
                self.dt.update_incremental()
        self._committed(batch_id, marks)

    def fit(self, data: pa.Table) -> tuple[pa.Table, bool]:
        """`schema.align` against this table (see there)."""
        return align(data, self.schema, uri=self.uri)


def _partition_filter(table: pa.Table, column: str, op: str, value: Any) -> pa.Array:
    """A delta-rs partition filter (`=`, `!=`, `in`, `not in` on partition value text) as
    a row mask of `table`."""
    text = pc.cast(table.column(column), pa.string())
    values = pa.array([str(v) for v in (value if isinstance(value, list) else [value])])
    mask = pc.fill_null(pc.is_in(text, value_set=values), False)
    return pc.invert(mask) if op in ("!=", "not in") else mask

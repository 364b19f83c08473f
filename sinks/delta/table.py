"""One Delta table as a layer writer sees it: create, read back the txn, commit once.

Every commit carries `Transaction(app_id, batch_id)` and the last applied source position
(commit metadata `tidemark.position`), so after a crash `open` tells which batch the table
already holds. delta-rs accepts a lower txn version without complaint; the writers check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.transaction import AddAction

from tidemark.kernel.names import location
from tidemark.sinks.errors import delta_errors
from tidemark.sinks.schema import align

log = logging.getLogger(__name__)

POSITION_KEY = "tidemark.position"
BATCH_KEY = "tidemark.batch"
APP_KEY = "tidemark.app"
_MAINTENANCE = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})
_HISTORY_SCAN = 200  # commits to look back for our metadata (maintenance commits carry none)


def table_uri(root: str, *parts: str) -> str:
    """`root/part/...` for a local path (made absolute) or an object-store URL."""
    return location(root, *parts)


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
        self._position: str | None = None
        self.extra_transactions: dict[str, int] = {}
        """More (app id, version) txn actions for the next commits: one commit that applies
        several writers' batches (the distributed runtime's partitions) records each."""

    def open(self) -> None:
        """Load the table if it exists (it is created by the first commit)."""
        with delta_errors(self.uri):
            if DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options or None):
                self.dt = DeltaTable(self.uri, storage_options=self.storage_options or None)
                self._position = self._read_position()

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

    def applied_batch(self) -> int:
        """The last batch id committed by this app id, 0 if none."""
        if self.dt is None:
            return 0
        with delta_errors(self.uri):
            return self.dt.transaction_version(self.app_id) or 0

    def applied_position(self) -> str | None:
        """The last source position committed by this app id."""
        return self._position

    def _read_position(self) -> str | None:
        assert self.dt is not None
        # Only our own commits: another worker's position says nothing about our events.
        for commit in self.dt.history(_HISTORY_SCAN):
            if commit.get(APP_KEY) == self.app_id and POSITION_KEY in commit:
                return str(commit[POSITION_KEY]) or None
        return None

    def only_maintenance_since(self, version: int | None, *, ours: int | None = None) -> bool:
        """True if every commit after `version` only compacted or vacuumed (no row changed),
        besides our own commit of batch `ours`."""
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
                ours is not None and c.get(APP_KEY) == self.app_id and c.get(BATCH_KEY) == str(ours)
            )
            for c in commits
        )

    def read(
        self,
        expression: ds.Expression | None = None,
        *,
        partitions: list[tuple[str, str, Any]] | None = None,
    ) -> pa.Table:
        """Rows matching `expression`; `partitions` (delta-rs filters) limit the files listed.

        Listing only the wanted partitions matters: building a dataset over every file of a
        big table costs more than reading a few buckets.
        """
        assert self.dt is not None
        with delta_errors(self.uri):
            dataset = self.dt.to_pyarrow_dataset(file_pruning_predicate=partitions)
            return dataset.to_table(filter=expression)

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
    ) -> None:
        """Write `data` in one Delta commit stamped with (app id, batch id) and `position`.

        Raises:
            SinkCommitConflict: a concurrent writer won; retry the batch.
            SinkError: any other storage failure.
        """
        props, position = self._properties(batch_id, position)
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
        self._committed(batch_id, position)

    def replace_files(
        self,
        actions: list[AddAction],
        *,
        partitions: list[tuple[str, str, Any]],
        batch_id: int,
        position: str | None,
    ) -> None:
        """Commit files written beside the table (`FileWriter`) in place of every file in
        `partitions` (delta-rs filters), with the same stamps as `commit`.

        Raises:
            SinkCommitConflict: a concurrent writer won; retry the batch.
            SinkError: any other storage failure.
        """
        assert self.dt is not None
        props, position = self._properties(batch_id, position)
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
        self._committed(batch_id, position)

    def _committed(self, batch_id: int, position: str | None) -> None:
        if position is not None:
            self._position = position
        assert self.dt is not None
        log.debug("committed batch %s to %s (version %s)", batch_id, self.uri, self.dt.version())

    def _properties(
        self, batch_id: int, position: str | None
    ) -> tuple[CommitProperties, str | None]:
        """The txn actions and metadata of a commit, and the position it records."""
        metadata = {BATCH_KEY: str(batch_id), APP_KEY: self.app_id}
        if self._position is not None and (position is None or position < self._position):
            position = self._position  # a replay never moves the position back
        if position is not None:
            metadata[POSITION_KEY] = position
        props = CommitProperties(
            app_transactions=[
                Transaction(self.app_id, batch_id),
                *(
                    Transaction(app, version)
                    for app, version in self.extra_transactions.items()
                    if app != self.app_id
                ),
            ],
            custom_metadata=metadata,
        )
        return props, position

    def fit(self, data: pa.Table) -> tuple[pa.Table, bool]:
        """`schema.align` against this table (see there)."""
        return align(data, self.schema, uri=self.uri)

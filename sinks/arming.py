"""The keys a table's re-snapshot brought: `<lake>/_tidemark/arming/<table>`.

A table snapshotted again into a lake that already holds rows (after a lake restore, a lost
slot, `tidemark resync`) must lose the rows that vanished at the source meanwhile. Which ones
vanished is only known at the end: every key the snapshot read, or the stream changed while
it ran, still exists (or its delete came through the stream); a row of the lake whose key
came from neither is gone. The keys are appended here, batch by batch in the batch's commit
sequence, so neither memory nor a crash loses them (a replay appends them again: harmless),
and read once at completion (`vanished`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tidemark.sinks.delta.table import DeltaHandle, table_uri

log = logging.getLogger(__name__)

ARMING = "_tm_arming"


class ArmingKeys:
    """The seen-key tables of every table being armed in one lake."""

    def __init__(
        self, root: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.app_id = app_id
        self.storage_options = dict(storage_options or {})
        self._handles: dict[str, DeltaHandle] = {}

    def handle(self, table: str) -> DeltaHandle:
        if table not in self._handles:
            handle = DeltaHandle(
                table_uri(self.root, "_tidemark", "arming", table),
                app_id=f"{self.app_id}:{table}:arming",
                storage_options=self.storage_options,
            )
            handle.open()
            self._handles[table] = handle
        return self._handles[table]

    def append(self, table: str, arming_id: str, keys: pa.Table, *, batch_id: int) -> None:
        """Keep `keys` (key columns only) as seen by arming `arming_id`.

        Always appended, never skipped by batch id: a batch id a killed process used may be
        given to other events after it, and keys kept twice only say the same thing twice.
        """
        if keys.num_rows == 0:
            return
        handle = self.handle(table)
        data = keys.append_column(ARMING, pa.repeat(pa.scalar(arming_id), keys.num_rows))
        fitted, evolves = handle.fit(data)
        handle.commit(fitted, batch_id=batch_id, position=None, evolves=evolves)

    def discard(self, table: str) -> None:
        """Forget the keys of a table's finished arming (after the batch that completed it
        committed; kept keys of another id are harmless if this does not happen)."""
        handle = self.handle(table)
        handle.refresh()
        if handle.dt is None:
            return
        try:
            handle.dt.delete()
            handle.dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        except Exception:  # best effort: they are filtered by arming id anyway
            log.warning("could not clear the kept keys of %s", table, exc_info=True)

    def seen(self, table: str, arming_id: str, key_columns: Sequence[str]) -> pa.Table:
        """The distinct keys arming `arming_id` saw (key columns only)."""
        handle = self.handle(table)
        handle.refresh()
        if handle.dt is None:
            return pa.table({k: pa.array([], pa.null()) for k in key_columns})
        rows = handle.read(ds.field(ARMING) == arming_id).select(list(key_columns))
        return rows.group_by(list(key_columns)).aggregate([])


def vanished(open_keys: pa.Table, seen: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """The keys of `open_keys` (what the lake holds) that are not in `seen`.

    `seen` is cast to the lake's key types first (the lake may have widened them).
    """
    keys = list(key_columns)
    if open_keys.num_rows == 0:
        return open_keys.select(keys)
    if seen.num_rows == 0:
        return open_keys.select(keys)
    target = open_keys.select(keys).schema
    seen = pa.table({k: pc.cast(seen.column(k), target.field(k).type) for k in keys})
    return open_keys.select(keys).join(seen, keys=keys, join_type="left anti")

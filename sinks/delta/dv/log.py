"""A Delta table's state replayed from its log: each live file's DV, statistics and tags.

delta-rs keeps this state too but does not expose deletion vectors (`get_add_actions` has no
DV columns), and a DV commit must name the exact DV each file carries now: a `remove`
without it leaves the old file alive for every reader (duplicate rows). So the writer keeps
its own view: the newest checkpoint (`_last_checkpoint`, classic single- or multi-part
Parquet), then every JSON commit after it, and from then on each new commit as it lands.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq

from tidemark.sinks.delta.dv.format import DeletionVector
from tidemark.sinks.delta.dv.store import TableStore

LOG = "_delta_log/"
_MAPS = ("partitionValues", "tags")


def commit_path(version: int) -> str:
    return f"{LOG}{version:020d}.json"


@dataclass(frozen=True)
class FileEntry:
    """One live data file as its last `add` said.

    Attributes:
        path: the path as the log writes it (URL-encoded, relative to the table).
        add: the `add` action as it was committed (re-emitted with a new DV).
        dv: its current deletion vector, None if no row of it is deleted.
    """

    path: str
    add: Mapping[str, Any]
    dv: DeletionVector | None

    @property
    def local_path(self) -> str:
        """The path to open (URL-decoded)."""
        return unquote(self.path)

    @property
    def partition_values(self) -> dict[str, str | None]:
        return dict(self.add.get("partitionValues") or {})

    @property
    def num_records(self) -> int | None:
        stats = self.add.get("stats")
        if not stats:
            return None
        value = json.loads(stats).get("numRecords")
        return None if value is None else int(value)

    @property
    def deleted(self) -> int:
        return 0 if self.dv is None else self.dv.cardinality

    @classmethod
    def from_add(cls, add: Mapping[str, Any]) -> FileEntry:
        action = dict(add)
        for key in _MAPS:  # a checkpoint's empty map reads back as an empty list
            if key in action and not isinstance(action[key], dict):
                action[key] = dict(action[key] or {})
        return cls(str(add["path"]), action, DeletionVector.from_json(add.get("deletionVector")))


@dataclass
class Changes:
    """What one or more commits did to the live files.

    Attributes:
        added: files that were not live before.
        removed: files no longer live (as they were).
        redeleted: files still live whose DV changed: (before, after).
        schema_changed: a metaData or protocol action was committed.
        operations: the `operation` of each commit.
    """

    added: list[FileEntry] = field(default_factory=list)
    removed: list[FileEntry] = field(default_factory=list)
    redeleted: list[tuple[FileEntry, FileEntry]] = field(default_factory=list)
    schema_changed: bool = False
    operations: list[str] = field(default_factory=list)

    def touched(self) -> set[str]:
        """Paths whose rows or DV changed (not the new ones)."""
        return {f.path for f in self.removed} | {b.path for b, _ in self.redeleted}


class LogState:
    """The live files, metadata, protocol and txn versions of one table at `version`."""

    def __init__(self) -> None:
        self.version = -1
        self.files: dict[str, FileEntry] = {}
        self.metadata: dict[str, Any] = {}
        self.protocol: dict[str, Any] = {}
        self.txns: dict[str, int] = {}
        self.tombstones: dict[str, int] = {}
        """Files (data and DV, relative paths) the log stopped using, and when (epoch ms):
        readers of the versions before may still open them until the retention passes."""

    @classmethod
    def load(cls, store: TableStore) -> LogState:
        """The newest state: the last checkpoint, then the JSON commits after it."""
        state = cls()
        checkpoint = _last_checkpoint(store)
        if checkpoint is not None:
            state._read_checkpoint(store, *checkpoint)
        versions = sorted(
            int(name[len(LOG) : -5])
            for name in (e.path for e in store.list_folder(LOG))
            if name.endswith(".json") and name[len(LOG) : -5].isdigit()
        )
        for version in versions:
            if version > state.version:
                state.apply(version, read_commit(store, version))
        return state

    def catch_up(self, store: TableStore) -> Changes:
        """Apply every commit after `version`; what they changed, together."""
        total = Changes()
        while True:
            try:
                actions = read_commit(store, self.version + 1)
            except FileNotFoundError:
                return total
            changes = self.apply(self.version + 1, actions)
            merge_changes(total, changes)

    def apply(self, version: int, actions: Iterable[Mapping[str, Any]]) -> Changes:
        """Apply one commit's actions (its version must follow ours)."""
        changes = Changes()
        adds: dict[str, Mapping[str, Any]] = {}
        removes: list[str] = []
        when = 0
        for action in actions:
            if "add" in action:
                adds[str(action["add"]["path"])] = action["add"]
            elif "remove" in action:
                removes.append(str(action["remove"]["path"]))
                when = max(when, int(action["remove"].get("deletionTimestamp") or 0))
            elif "txn" in action:
                txn = action["txn"]
                self.txns[str(txn["appId"])] = int(txn["version"])
            elif "metaData" in action:
                self.metadata = dict(action["metaData"])
                changes.schema_changed = True
            elif "protocol" in action:
                self.protocol = dict(action["protocol"])
                changes.schema_changed = True
            elif "commitInfo" in action:
                changes.operations.append(str(action["commitInfo"].get("operation", "")))
        for path in removes:
            before = self.files.pop(path, None)
            if before is not None:
                self._bury(before, when, whole=path not in adds)
            if before is not None and path not in adds:
                changes.removed.append(before)
            elif before is not None:
                self.files[path] = before  # re-added below: a DV change
        for path, add in adds.items():
            after = FileEntry.from_add(add)
            before = self.files.get(path)
            self.files[path] = after
            if before is None:
                changes.added.append(after)
            else:
                changes.redeleted.append((before, after))
        self.version = version
        return changes

    def _bury(self, entry: FileEntry, when: int, *, whole: bool) -> None:
        """Remember when the log stopped using `entry`'s DV file (and, `whole`, the file)."""
        if whole:
            self.tombstones[entry.local_path] = when
        dv_path = entry.dv.relative_path() if entry.dv is not None else None
        if dv_path is not None:
            self.tombstones[dv_path] = max(when, self.tombstones.get(dv_path, 0))

    @property
    def partition_columns(self) -> list[str]:
        return list(self.metadata.get("partitionColumns") or [])

    @property
    def configuration(self) -> dict[str, str]:
        return dict(self.metadata.get("configuration") or {})

    def dv_feature(self) -> bool:
        """True when the protocol lists the `deletionVectors` reader and writer feature."""
        return "deletionVectors" in (self.protocol.get("writerFeatures") or [])

    def dv_enabled(self) -> bool:
        """True when writers may write DVs (feature and `delta.enableDeletionVectors`)."""
        enabled = self.configuration.get("delta.enableDeletionVectors", "false")
        return self.dv_feature() and enabled.lower() == "true"

    def rows(self) -> int | None:
        """Rows not deleted, from statistics and DVs; None when a file lacks `numRecords`."""
        total = 0
        for entry in self.files.values():
            records = entry.num_records
            if records is None:
                return None
            total += records - entry.deleted
        return total

    def _read_checkpoint(self, store: TableStore, version: int, parts: int | None) -> None:
        names = (
            [f"{LOG}{version:020d}.checkpoint.parquet"]
            if not parts
            else [
                f"{LOG}{version:020d}.checkpoint.{part:010d}.{parts:010d}.parquet"
                for part in range(1, parts + 1)
            ]
        )
        for name in names:
            table = pq.read_table(io.BytesIO(store.get(name)))
            for row in table.to_pylist():
                action = {key: _plain(value) for key, value in row.items() if value is not None}
                if "add" in action:
                    entry = FileEntry.from_add(action["add"])
                    self.files[entry.path] = entry
                elif "remove" in action:
                    gone = FileEntry.from_add(action["remove"])
                    self._bury(
                        gone, int(action["remove"].get("deletionTimestamp") or 0), whole=True
                    )
                elif "txn" in action:
                    self.txns[str(action["txn"]["appId"])] = int(action["txn"]["version"])
                elif "metaData" in action:
                    metadata = action["metaData"]
                    metadata["configuration"] = dict(metadata.get("configuration") or {})
                    self.metadata = metadata
                elif "protocol" in action:
                    self.protocol = action["protocol"]
        self.version = version

    def copy(self) -> LogState:
        other = LogState()
        other.version = self.version
        other.files = dict(self.files)
        other.metadata = dict(self.metadata)
        other.protocol = dict(self.protocol)
        other.txns = dict(self.txns)
        other.tombstones = dict(self.tombstones)
        return other


def read_commit(store: TableStore, version: int) -> list[dict[str, Any]]:
    """The actions of one JSON commit; FileNotFoundError if that version does not exist."""
    text = store.get(commit_path(version)).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _last_checkpoint(store: TableStore) -> tuple[int, int | None] | None:
    try:
        data = json.loads(store.get(f"{LOG}_last_checkpoint"))
    except FileNotFoundError:
        return None
    if data.get("v2Checkpoint"):
        raise NotImplementedError("v2 checkpoints (with sidecars) are not read")
    return int(data["version"]), data.get("parts")


def _plain(value: Any) -> Any:
    """A checkpoint value as the JSON log writes it: maps as dicts, no null fields (an empty
    map reads back as an empty list: `FileEntry.from_add` and the metadata fix those)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(item, tuple) and len(item) == 2 for item in value)
    ):
        return {k: v for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def merge_changes(total: Changes, more: Changes) -> None:
    """Fold `more` (a later commit) into `total`."""
    added = {f.path: f for f in total.added}
    for before, after in more.redeleted:
        if before.path in added:
            added[before.path] = after
        else:
            total.redeleted.append((before, after))
    for entry in more.removed:
        if entry.path in added:
            del added[entry.path]
        else:
            total.removed.append(entry)
    total.added = [*added.values(), *more.added]
    total.schema_changed = total.schema_changed or more.schema_changed
    total.operations.extend(more.operations)


def with_dv(entry: FileEntry, dv: DeletionVector) -> FileEntry:
    """`entry` carrying `dv` instead (an add for the next commit)."""
    add = dict(entry.add)
    add["deletionVector"] = dv.to_json()
    return replace(entry, add=add, dv=dv)

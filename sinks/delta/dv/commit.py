"""One merge-on-read commit: DVs for the rows it deletes, the files it adds, the txn.

For every file that loses rows, the commit holds a `remove` carrying the file's CURRENT DV
and an `add` of the same path with the new DV (old rows and new rows), `numRecords` still the
physical count and `tightBounds: false`. The new DVs of one commit share one new DV file.
Both mistakes that silently corrupt a table for every reader are refused before anything is
written (`check_actions`): a remove without the file's current DV (the old file stays alive:
duplicate rows) and a DV id the table already knows (readers then drop the whole file).

The commit is written put-if-absent as the next version. When another writer took that
version first: if it changed none of our files (an append, a vacuum), the same actions are
committed at the version after (rebase); if it removed or re-deleted one of them (a
compaction, another DV commit), the rows we located may have moved: `DvConflict`, and the
caller locates them again from the new state.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from deltalake.transaction import AddAction
from pyroaring import BitMap64

from tidemark.kernel.errors import TerminalError
from tidemark.sinks.delta.dv.format import DeletionVector, build_file, read_from_file, read_inline
from tidemark.sinks.delta.dv.log import Changes, FileEntry, LogState, commit_path, merge_changes
from tidemark.sinks.delta.dv.store import TableStore, open_store
from tidemark.sinks.errors import SinkCommitConflict, SinkError

log = logging.getLogger(__name__)

MAX_REBASES = 50
ENGINE = "tidemark"
_BITMAP_CACHE = 20_000
Planned = dict[str, tuple[FileEntry, BitMap64, DeletionVector | None]]
"""Per changed file: (its entry now, every row deleted after the commit, the new DV or None
when the whole file goes)."""


class DvConflict(SinkCommitConflict):
    """Another commit changed or moved rows this one deletes; locate them again (transient)."""


class InvalidDvCommit(SinkError, TerminalError):
    """A DV commit that would corrupt the table (a bug, never retried)."""


def add_json(action: AddAction) -> dict[str, Any]:
    """An `AddAction` written by `FileWriter`, as a log `add`."""
    return {
        "path": action.path,
        "partitionValues": dict(action.partition_values),
        "size": action.size,
        "modificationTime": action.modification_time,
        "dataChange": action.data_change,
        "stats": action.stats,
    }


class DvTable:
    """One table's log state and its DVs, and the commits that change them.

    Args:
        uri: the table location.
        storage_options: delta-rs storage options.
        before_commit: called after the DV file is written and before the commit: the
            crash tests stop the process there.
    """

    def __init__(
        self,
        uri: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self.uri = uri
        self.store: TableStore = open_store(uri, storage_options)
        self.state = LogState.load(self.store)
        self.before_commit = before_commit
        self._bitmaps: OrderedDict[str, BitMap64] = OrderedDict()
        self._unseen = Changes()

    def refresh(self) -> Changes:
        """Catch up with commits made by others; what they changed since the last call
        (including commits a lost commit race already caught up with)."""
        merge_changes(self._unseen, self.state.catch_up(self.store))
        changes, self._unseen = self._unseen, Changes()
        return changes

    def deleted_rows(self, entries: Iterable[FileEntry]) -> dict[str, BitMap64]:
        """The rows each file's current DV deletes (empty for a file without DV)."""
        out: dict[str, BitMap64] = {}
        files: dict[str, bytes] = {}  # one DV file holds the DVs of many data files
        for entry in entries:
            dv = entry.dv
            if dv is None:
                out[entry.path] = BitMap64()
                continue
            cached = self._bitmaps.get(dv.unique_id)
            if cached is None:
                cached = self._load(dv, files)
                self._remember(dv.unique_id, cached)
            out[entry.path] = cached
        return out

    def _load(self, dv: DeletionVector, files: dict[str, bytes]) -> BitMap64:
        if dv.storage_type == "i":
            return read_inline(dv)
        path = dv.relative_path() if dv.storage_type == "u" else _relative(self.uri, dv)
        assert path is not None
        if path not in files:
            files[path] = self.store.get(path)
        return read_from_file(dv, files[path])

    def _remember(self, unique_id: str, rows: BitMap64) -> None:
        self._bitmaps[unique_id] = rows
        self._bitmaps.move_to_end(unique_id)
        while len(self._bitmaps) > _BITMAP_CACHE:
            self._bitmaps.popitem(last=False)

    def commit(
        self,
        *,
        deletes: Mapping[str, BitMap64],
        adds: Sequence[Mapping[str, Any]] = (),
        removes: Sequence[str] = (),
        txns: Mapping[str, int] | None = None,
        batches: Mapping[str, int] | None = None,
        info: Mapping[str, str] | None = None,
        operation: str = "MERGE",
        extra: Sequence[Mapping[str, Any]] = (),
    ) -> Changes:
        """Commit DVs for `deletes` (path -> rows to delete), new files `adds`, whole-file
        `removes` (compaction), txn actions and commit metadata, as the next version.
        `batches` (app id -> batch id, among `txns`) say which batch this is: another
        writer that committed it first makes this commit pointless.

        Raises:
            DvConflict: another commit changed or removed one of the files we change.
            InvalidDvCommit: the actions would corrupt the table.
        """
        changed, dv_path, content = self._plan(deletes)
        if content is not None and dv_path is not None:
            self.store.put(dv_path, content)
        if self.before_commit is not None:
            self.before_commit()
        mine = set(changed) | set(removes)
        for _ in range(MAX_REBASES):
            actions = self._actions(changed, adds, removes, txns or {}, info or {}, operation)
            actions.extend(dict(action) for action in extra)
            check_actions(self.state, actions)
            version = self.state.version + 1
            payload = "\n".join(json.dumps(a, separators=(",", ":")) for a in actions) + "\n"
            if self.store.put_if_absent(commit_path(version), payload.encode()):
                for _, rows, dv in changed.values():
                    if dv is not None:
                        self._remember(dv.unique_id, rows)
                return self.state.apply(version, actions)
            winners = self.state.catch_up(self.store)
            merge_changes(self._unseen, winners)
            if winners.schema_changed or winners.touched() & mine:
                raise DvConflict(
                    f"another commit changed files of `{self.uri}` that batch rows live in",
                    hint="transient: the rows are located again and the commit retried",
                    table=self.uri,
                )
            if batches and any(self.state.txns.get(a, -1) >= v for a, v in batches.items()):
                raise DvConflict(
                    f"another writer committed the same batch to `{self.uri}`",
                    hint="transient: the retry skips it",
                    table=self.uri,
                )
            log.info("rebasing a DV commit on %s to version %s", self.uri, self.state.version + 1)
        raise SinkCommitConflict(
            f"gave up rebasing a commit on `{self.uri}` after {MAX_REBASES} tries",
            hint="transient: too many concurrent writers",
            table=self.uri,
        )

    def _plan(self, deletes: Mapping[str, BitMap64]) -> tuple[Planned, str | None, bytes | None]:
        """Per changed file: (entry now, all deleted rows, new DV or None if the whole file
        goes); and the new DV file (path, bytes), if any."""
        missing = [path for path in deletes if path not in self.state.files]
        if missing:
            raise DvConflict(
                f"files of `{self.uri}` were removed by another commit: {missing[:3]}",
                hint="transient: the rows are located again and the commit retried",
                table=self.uri,
            )
        entries = [self.state.files[path] for path in deletes]
        current = self.deleted_rows(entries)
        planned: dict[str, tuple[FileEntry, BitMap64]] = {}
        for entry in entries:
            rows = current[entry.path] | deletes[entry.path]
            if len(rows) != len(current[entry.path]):
                planned[entry.path] = (entry, rows)
        partial = [
            (path, entry, rows)
            for path, (entry, rows) in planned.items()
            if entry.num_records is None or len(rows) < entry.num_records
        ]
        changed: Planned = {path: (entry, rows, None) for path, (entry, rows) in planned.items()}
        if not partial:
            return changed, None, None
        name, content, descriptors = build_file([rows for _, _, rows in partial])
        for (path, entry, rows), dv in zip(partial, descriptors, strict=True):
            changed[path] = (entry, rows, dv)
        return changed, name, content

    def _actions(
        self,
        changed: Planned,
        adds: Sequence[Mapping[str, Any]],
        removes: Sequence[str],
        txns: Mapping[str, int],
        info: Mapping[str, str],
        operation: str,
    ) -> list[dict[str, Any]]:
        now = int(time.time() * 1000)
        actions: list[dict[str, Any]] = [
            {
                "commitInfo": {
                    "timestamp": now,
                    "operation": operation,
                    "operationParameters": {},
                    "engineInfo": ENGINE,
                    "clientVersion": ENGINE,
                    **info,
                }
            }
        ]
        actions.extend(
            {"txn": {"appId": app, "version": version, "lastUpdated": now}}
            for app, version in txns.items()
        )
        for path, (_, _, dv) in changed.items():
            entry = self.state.files[path]  # as it is now (a rebase keeps it: untouched)
            actions.append({"remove": remove_json(entry, now)})
            if dv is not None:
                add = dict(entry.add)
                add["deletionVector"] = dv.to_json()
                add["dataChange"] = True
                add["stats"] = loose_stats(add.get("stats"))
                actions.append({"add": add})
        for path in removes:
            actions.append({"remove": remove_json(self.state.files[path], now)})
        actions.extend({"add": dict(add)} for add in adds)
        return actions


def enable_deletion_vectors(table: DvTable) -> None:
    """Let writers write DVs: protocol (3, 7) with the `deletionVectors` reader and writer
    feature, and `delta.enableDeletionVectors=true`, in one commit (once per table).

    delta-rs's own switch for the property also adds `variantType` and other features that
    older readers (Spark 3) refuse, so we write the two actions ourselves.
    """
    state = table.state
    if state.dv_enabled():
        return
    protocol = dict(state.protocol)
    readers = set(protocol.get("readerFeatures") or []) | {"deletionVectors"}
    writers = set(protocol.get("writerFeatures") or []) | {"deletionVectors"}
    protocol = {
        "minReaderVersion": max(3, int(protocol.get("minReaderVersion", 1))),
        "minWriterVersion": max(7, int(protocol.get("minWriterVersion", 2))),
        "readerFeatures": sorted(readers),
        "writerFeatures": sorted(writers),
    }
    metadata = dict(state.metadata)
    metadata["configuration"] = {**state.configuration, "delta.enableDeletionVectors": "true"}
    table.commit(
        deletes={},
        operation="SET TBLPROPERTIES",
        extra=[{"protocol": protocol}, {"metaData": metadata}],
    )


def remove_json(entry: FileEntry, now: int) -> dict[str, Any]:
    """The `remove` of a live file, carrying its current DV (else the file stays alive)."""
    remove: dict[str, Any] = {
        "path": entry.path,
        "deletionTimestamp": now,
        "dataChange": True,
        "extendedFileMetadata": True,
        "partitionValues": entry.partition_values,
        "size": entry.add.get("size"),
    }
    if entry.dv is not None:
        remove["deletionVector"] = entry.dv.to_json()
    for key in ("baseRowId", "defaultRowCommitVersion", "tags"):
        if entry.add.get(key) is not None:
            remove[key] = entry.add[key]
    return remove


def loose_stats(stats: str | None) -> str | None:
    """File statistics once rows are deleted: min/max may no longer be tight."""
    if not stats:
        return stats
    data = json.loads(stats)
    data["tightBounds"] = False
    return json.dumps(data, separators=(",", ":"))


def check_actions(state: LogState, actions: Sequence[Mapping[str, Any]]) -> None:
    """Refuse actions that would silently corrupt the table for every reader.

    Raises:
        InvalidDvCommit: a `remove` of a live file without its exact current DV, a DV id the
            table already holds (or two adds sharing one), an add of a path whose remove is
            missing, an action whose `partitionValues` is not a map (delta-rs then refuses
            to load the table at all).
    """
    known = {e.dv.unique_id for e in state.files.values() if e.dv is not None}
    removed: set[str] = set()
    seen: set[str] = set()
    for action in actions:
        for kind in ("add", "remove"):
            if kind in action and not isinstance(action[kind].get("partitionValues"), dict):
                raise InvalidDvCommit(
                    f"{kind} of `{action[kind].get('path')}` without a partitionValues map: "
                    "no reader could load the table",
                    table=str(action[kind].get("path")),
                )
    for action in actions:
        if "remove" in action:
            remove = action["remove"]
            path = str(remove["path"])
            entry = state.files.get(path)
            if entry is None:
                raise InvalidDvCommit(f"remove of `{path}`, which is not live", table=path)
            carried = DeletionVector.from_json(remove.get("deletionVector"))
            if carried != entry.dv:
                raise InvalidDvCommit(
                    f"remove of `{path}` without its current DV "
                    f"(`{entry.dv.unique_id if entry.dv else None}`): the file would stay live",
                    table=path,
                )
            removed.add(path)
    for action in actions:
        if "add" in action:
            add = action["add"]
            path = str(add["path"])
            if path in state.files and path not in removed:
                raise InvalidDvCommit(f"add of live `{path}` without its remove", table=path)
            dv = DeletionVector.from_json(add.get("deletionVector"))
            if dv is None:
                continue
            if dv.unique_id in known or dv.unique_id in seen:
                raise InvalidDvCommit(
                    f"DV id `{dv.unique_id}` of `{path}` is used already: readers would drop "
                    "the whole file",
                    table=path,
                )
            seen.add(dv.unique_id)


def _relative(uri: str, dv: DeletionVector) -> str:
    root = uri.rstrip("/") + "/"
    if not dv.path_or_inline.startswith(root):
        raise SinkError(f"DV `{dv.path_or_inline}` lies outside `{uri}`", table=uri)
    return dv.path_or_inline[len(root) :]

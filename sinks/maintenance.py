"""Background compaction and vacuum that never blocks a commit.

Append-only parts (the changelog, forensic history `_tm_current=false`) collect one small
file per commit; a daemon thread compacts them with `optimize.compact` and vacuums files
that no recent version needs. It works on its own `DeltaTable` objects, so writers never
wait on it. delta-rs resolves concurrent commits optimistically: when a writer and the
compaction collide, the loser gets `CommitFailedError`; here the compaction simply tries
again next round, and the writers retry their own commit (see `sinks.delta.bucketed`).
Bucket partitions of live and forensic-current are rewritten whole on every touch, so they
hold one file each and need no compaction; merge-on-read layers do (DVs folded back, all
of them once a table is idle: its version unchanged for `idle_after`, a minute).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from tidemark.kernel.columns import BUCKET, CURRENT
from tidemark.sinks.delta.dv.compaction import Policy, collect, fold
from tidemark.sinks.readers import has_deletion_vectors

log = logging.getLogger(__name__)

Kind = Literal["append", "forensic", "mor_live", "mor_forensic"]
"""`append`: an unpartitioned append-only table (changelog, batch log, dead letters);
`forensic`: only the history partitions (`_tm_current=false`) are compacted;
`mor_live`, `mor_forensic`: merge-on-read layers (`sinks/delta/dv/compaction.py`: DVs folded
back into files, the forensic history compacted like `forensic`'s, unused files collected)."""
Targets = Callable[[], list[tuple[str, Kind]]]


def compact(
    uri: str,
    kind: Kind,
    *,
    storage_options: Mapping[str, str] | None = None,
    target_size: int = 4 * 1024 * 1024,
    min_files: int = 10,
    idle: bool = False,
) -> int:
    """Compact the append-only part of one table; returns files removed.

    `idle`: no writer committed to the table for a while (`Maintenance.idle_after`); a
    merge-on-read layer then folds every DV, not only files past the thresholds
    (`Policy.every_dv`).

    Only partitions holding at least `min_files` files below `target_size` are rewritten,
    and files that reached `target_size` are final: `optimize.compact` bin-packs every file
    below the target, so a large target would rewrite the same growing file again and again.
    A round's work thus follows what was appended since the last one, not the history.
    """
    policy = Policy(every_dv=idle)
    if kind == "mor_live":
        return fold(uri, storage_options=storage_options, policy=policy)
    if kind == "mor_forensic":
        folded = fold(uri, storage_options=storage_options, scope={CURRENT: "true"}, policy=policy)
        return folded + _compact_history(uri, storage_options, target_size, min_files)
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    actions = pa.table(dt.get_add_actions(flatten=True))
    small = actions.filter(pc.less(actions.column("size_bytes"), target_size))
    if kind == "append":
        if small.num_rows < min_files:
            return 0
        filters = None
    else:
        small = small.filter(pc.invert(small.column(f"partition.{CURRENT}")))
        counts = pc.value_counts(small.column(f"partition.{BUCKET}")).to_pylist()
        buckets = [str(c["values"]) for c in counts if c["counts"] >= min_files]
        if not buckets:
            return 0
        filters = [(CURRENT, "=", "false"), (BUCKET, "in", buckets)]
    metrics = dt.optimize.compact(partition_filters=filters, target_size=target_size)
    return int(metrics.get("numFilesRemoved", 0))


def _compact_history(
    uri: str, storage_options: Mapping[str, str] | None, target_size: int, min_files: int
) -> int:
    """Merge-on-read forensic history (`_tm_current=false`, no DVs): one small file per
    batch, compacted by delta-rs once `min_files` are below `target_size`."""
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    actions = pa.table(dt.get_add_actions(flatten=True))
    small = actions.filter(pc.less(actions.column("size_bytes"), target_size))
    small = small.filter(pc.invert(small.column(f"partition.{CURRENT}")))
    if small.num_rows < min_files:
        return 0
    metrics = dt.optimize.compact(
        partition_filters=[(CURRENT, "=", "false")], target_size=target_size
    )
    return int(metrics.get("numFilesRemoved", 0))


def vacuum(
    uri: str, *, retention_hours: int, storage_options: Mapping[str, str] | None = None
) -> int:
    """Delete unreferenced files older than `retention_hours`; returns how many.

    Never delta-rs `vacuum(full=True)`, and on a table with deletion vectors not delta-rs's
    vacuum at all: Tidemark's collector knows which DV files live files use.
    """
    dt = DeltaTable(uri, storage_options=dict(storage_options or {}) or None)
    if has_deletion_vectors(dt):
        return collect(uri, retention_hours=retention_hours, storage_options=storage_options)
    removed = dt.vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
    )
    return len(removed)


class Maintenance:
    """A daemon thread that compacts every `interval` seconds and vacuums every `vacuum_every`.

    Args:
        targets: returns the (table URI, layer) pairs to look after.
        interval: seconds between compaction rounds.
        retention_hours: files younger than this are never vacuumed (readers may use them).
        vacuum_every: vacuum on every n-th round.
        idle_after: seconds a merge-on-read table's version must stay unchanged (no writer
            committing) before a round folds every DV it holds. A minute: a table that
            takes a small batch now and then is not rewritten after each one (with
            uniform keys a batch leaves a DV in nearly every file).
    """

    def __init__(
        self,
        targets: Targets,
        *,
        storage_options: Mapping[str, str] | None = None,
        interval: float = 30.0,
        retention_hours: int = 24,
        vacuum_every: int = 10,
        idle_after: float = 60.0,
    ) -> None:
        self.targets = targets
        self.storage_options = dict(storage_options or {})
        self.interval = interval
        self.retention_hours = retention_hours
        self.vacuum_every = vacuum_every
        self.idle_after = idle_after
        self.rounds = 0
        self.files_compacted = 0
        # merge-on-read tables: the version after our last round, and since when it stood
        self._versions: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tidemark-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)

    def run_once_and_wait(self, timeout: float) -> None:
        """Trigger a round now and wait for it to finish."""
        with self._done:
            target = self.rounds + 1
            self._wake.set()
            self._done.wait_for(lambda: self.rounds >= target, timeout=timeout)

    def _run(self) -> None:
        try:  # below the writers: a round rewrites files, a commit is waited for
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux, or not allowed
            pass
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            self.round()

    def round(self) -> None:
        """One pass over every target; failures are logged and retried next round."""
        do_vacuum = (self.rounds + 1) % self.vacuum_every == 0
        for uri, kind in self.targets():
            try:
                merge_on_read = kind in ("mor_live", "mor_forensic")
                version = self._version(uri) if merge_on_read else None
                quiet = self._quiet_since(uri, version)
                idle = quiet is not None and time.monotonic() - quiet >= self.idle_after
                removed = compact(uri, kind, storage_options=self.storage_options, idle=idle)
                self.files_compacted += removed
                if version is not None:  # our own commit does not end the quiet
                    since = time.monotonic() if quiet is None else quiet
                    self._versions[uri] = (self._version(uri) if removed else version, since)
                if do_vacuum:
                    vacuum(
                        uri,
                        retention_hours=self.retention_hours,
                        storage_options=self.storage_options,
                    )
            except CommitFailedError as exc:
                log.info("maintenance of %s lost to a writer, retrying later: %s", uri, exc)
            except DeltaError as exc:
                log.warning("maintenance of %s failed: %s", uri, exc)
            except Exception:  # keep the thread alive; compaction is retried next round
                log.exception("maintenance of %s failed unexpectedly", uri)
        with self._done:
            self.rounds += 1
            self._done.notify_all()

    def _quiet_since(self, uri: str, version: int | None) -> float | None:
        """Since when no writer has committed to the table (None: one did since our last
        round, or it is not a merge-on-read table): `version` is still the one our last
        round left."""
        seen = self._versions.get(uri)
        return seen[1] if seen is not None and seen[0] == version else None

    def _version(self, uri: str) -> int:
        return DeltaTable(uri, storage_options=self.storage_options or None).version()

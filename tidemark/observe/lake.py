"""The lake's Delta tables as their logs describe them: no data file is read.

Everything the status needs per table and layer is in the Delta log: the commit that carried
the last source position (`tidemark.position` commit metadata) and its time, the rows (each
file's `numRecords`), and the newest source commit time the layer holds (each file's
`max._tm_source_ts` statistics; forensic: `_tm_valid_from`/`_tm_valid_to`). Reading that
costs a few small JSON and checkpoint files, not the table: `tidemark status` answers in well
under a second on a demo lake, and the web page can poll it.

Tables stay open between calls (`update_incremental` reads only new commits) and what was
derived from a version is kept until the next one. A merge-on-read table (deletion vectors)
is counted by delta-rs's own query engine, which applies them (`numRecords` does not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, QueryBuilder

from tidemark.kernel.columns import INGESTED_AT, SOURCE_TS, VALID_FROM, VALID_TO, Layer
from tidemark.kernel.names import location
from tidemark.sinks.delta.table import first_version_loads
from tidemark.sinks.errors import damaged
from tidemark.sinks.readers import has_deletion_vectors

logger = logging.getLogger(__name__)

POSITION_KEY = "tidemark.position"
BATCH_KEY = "tidemark.batch"
_HISTORY_SCAN = 50  # commits to look back for our metadata (maintenance commits carry none)


def table_uri(root: str, *parts: str) -> str:
    """`root/part/...` for a local path (made absolute) or an object-store URL, each part
    escaped as the sinks write it (`tidemark.kernel.names.path_segment`)."""
    return location(root, *parts)


@dataclass(frozen=True)
class LayerMeta:
    """One layer of one lake table, from its Delta log.

    Attributes:
        layer: changelog, live or forensic.
        version: the Delta version read.
        files: data files.
        rows: rows (deletion vectors applied).
        position: the last source position committed (None before the first).
        committed_at: when the commit that carried `position` was made.
        batch: the batch id of that commit.
        newest_change: source commit time of the newest change the layer holds.
    """

    layer: Layer
    version: int
    files: int
    rows: int
    position: str | None
    committed_at: datetime | None
    batch: int | None
    newest_change: datetime | None


@dataclass
class _Open:
    """A Delta table kept open, and what was derived from its current version."""

    table: DeltaTable
    derived: dict[str, Any]
    checked: float = 0.0  # monotonic time of the last look for new commits


def _max_time(actions: pa.Table, column: str) -> datetime | None:
    name = f"max.{column}"
    if name not in actions.column_names or actions.num_rows == 0:
        return None
    value = pc.max(actions.column(name)).as_py()
    return value if isinstance(value, datetime) else None


class LakeMeta:
    """Read-only, cached access to the Delta logs under one lake root. Thread-safe.

    Args:
        root: the lake root (local path or object-store URL).
        storage_options: delta-rs storage options.
        max_age_s: how long a table's version counts as current before the log is listed
            again (several panels of one page load share one look).
    """

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        max_age_s: float = 0.5,
    ) -> None:
        self.root = root
        self.storage_options = dict(storage_options or {})
        self.max_age_s = max_age_s
        self._open: dict[str, _Open] = {}
        self._lock = threading.RLock()

    def uri(self, *parts: str) -> str:
        return table_uri(self.root, *parts)

    def table(self, *parts: str) -> DeltaTable | None:
        """The Delta table at `<root>/<parts>`, brought up to date; None while it does not exist."""
        uri = self.uri(*parts)
        options = self.storage_options or None
        with self._lock:
            known = self._open.get(uri)
            try:
                if known is None:
                    if not DeltaTable.is_deltatable(uri, storage_options=options):
                        return None
                    known = self._open[uri] = _Open(DeltaTable(uri, storage_options=options), {})
                    known.checked = time.monotonic()
                elif time.monotonic() - known.checked >= self.max_age_s:
                    before = known.table.version()
                    known.table.update_incremental()
                    known.checked = time.monotonic()
                    if known.table.version() != before:
                        known.derived.clear()
            except Exception as exc:  # mid-creation, deleted, storage hiccup: not there now
                self._open.pop(uri, None)
                broken = damaged(exc, uri)
                if broken is not None and first_version_loads(uri, options):
                    raise broken from exc  # a damaged log that `tidemark repair` can mend
                logger.debug("cannot read %s: %s", uri, exc)
                return None
            return known.table

    def derived(self, parts: tuple[str, ...], key: str, compute: Any) -> Any:
        """`compute(table)` for the current version of a table, computed once per version;
        None while the table does not exist."""
        with self._lock:
            table = self.table(*parts)
            if table is None:
                return None
            cache = self._open[self.uri(*parts)].derived
            if key not in cache:
                cache[key] = compute(table)
            return cache[key]

    def actions(self, *parts: str) -> pa.Table | None:
        """The add actions (one row per data file, with statistics) of the current version."""
        return self.derived(parts, "actions", lambda t: pa.table(t.get_add_actions(flatten=True)))

    def layer(self, table: str, layer: Layer) -> LayerMeta | None:
        """Position, commit time, rows and newest change of one layer; None if not created."""
        parts = (layer.value, table)
        return self.derived(parts, "meta", lambda t: _layer_meta(t, layer, self.actions(*parts)))

    def events_per_minute(self, table: str, *, now: datetime, minutes: int = 60) -> list[float]:
        """Changelog events per minute over the last `minutes` (oldest first).

        From the changelog's file statistics: a file written by one batch holds that
        batch's events, stamped `_tm_ingested_at`; a compacted file's events are spread
        evenly over the span its statistics give. Empty when there is no changelog.
        """
        actions = self.actions(Layer.CHANGELOG.value, table)
        buckets = [0.0] * minutes
        low_name, high_name = f"min.{INGESTED_AT}", f"max.{INGESTED_AT}"
        if actions is None or high_name not in actions.column_names:
            return buckets
        start = now - timedelta(minutes=minutes)
        recent = actions.filter(pc.greater_equal(actions.column(high_name), pa.scalar(start)))
        for low, high, count in zip(
            recent.column(low_name).to_pylist(),
            recent.column(high_name).to_pylist(),
            recent.column("num_records").to_pylist(),
            strict=True,
        ):
            _spread(buckets, start, low or high, high, float(count or 0))
        return buckets

    def close(self) -> None:
        with self._lock:
            self._open.clear()


def _layer_meta(table: DeltaTable, layer: Layer, actions: pa.Table) -> LayerMeta:
    """Position, commit time, rows and newest change of one layer at its current version."""
    if layer is Layer.FORENSIC:
        times = [_max_time(actions, VALID_FROM), _max_time(actions, VALID_TO)]
        newest = max((t for t in times if t is not None), default=None)
    else:
        newest = _max_time(actions, SOURCE_TS)
    if has_deletion_vectors(table):
        result = QueryBuilder().register("t", table).execute("SELECT count(*) AS n FROM t")
        rows = int(pa.table(result.read_all()).column("n")[0].as_py())
    else:
        rows = int(pc.sum(actions.column("num_records")).as_py() or 0)
    position, when, batch = _last_position(table)
    return LayerMeta(
        layer=layer,
        version=table.version(),
        files=actions.num_rows,
        rows=rows,
        position=position,
        committed_at=when,
        batch=batch,
        newest_change=newest,
    )


def _spread(buckets: list[float], start: datetime, low: datetime, high: datetime, n: float) -> None:
    """Add `n` events spread evenly over [low, high] to minute buckets starting at `start`."""
    span = (high - low).total_seconds()
    if span <= 0:
        index = int((high - start).total_seconds() // 60)
        if 0 <= index < len(buckets):
            buckets[index] += n
        return
    for index in range(len(buckets)):
        left = start + timedelta(minutes=index)
        right = left + timedelta(minutes=1)
        overlap = (min(right, high) - max(left, low)).total_seconds()
        if overlap > 0:
            buckets[index] += n * overlap / span


def _last_position(table: DeltaTable) -> tuple[str | None, datetime | None, int | None]:
    """(position, commit time, batch) of the newest commit that carried a position; else the
    newest commit's time. Looks at the last few commits first, then further back."""
    newest: datetime | None = None
    for limit in (5, _HISTORY_SCAN):
        for commit in table.history(limit):
            when = commit.get("timestamp")
            stamp = datetime.fromtimestamp(when / 1000, UTC) if when else None
            newest = newest or stamp
            if commit.get(POSITION_KEY):
                batch = commit.get(BATCH_KEY)
                return str(commit[POSITION_KEY]), stamp, int(batch) if batch else None
        if table.version() + 1 <= limit:
            break
    return None, newest, None

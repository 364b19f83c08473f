"""The loads the lake has seen: `<lake>/_tidemark/loads`, one row per change of a load's state.

A table armed by the parallel loader (docs/loading.md) keeps, in the lake itself, how the
load was cut (its ranges), where its snapshots sit in the change stream (their points, one
more for every resume after a crash), the batch ids it reserved, and whether it finished.
Everything a restart needs is there: which ranges to read again (the layers' own commits say
which are done, `sinks/bulk.py`), and how to hand the table over to the stream (which
streamed changes each snapshot already holds, `stream_processors/loading/gate.py`).

The table is append-only and small (a few rows per load); the newest row of a table is its
state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa

from tidemark.sinks.delta.retry import retry_conflicts
from tidemark.sinks.delta.table import DeltaHandle, table_uri

log = logging.getLogger(__name__)

Status = Literal["loading", "done"]
Kind = Literal["initial", "rearm", "refresh"]

SCHEMA = pa.schema(
    [
        pa.field("table", pa.string()),
        pa.field("load_id", pa.string()),
        pa.field("state", pa.string()),
        pa.field("written_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class LoadState:
    """One load of one table.

    Attributes:
        table: the lake table.
        load_id: unique per load (names its ranges' commits).
        kind: `initial` (the lake held nothing of the table: bulk files), `rearm` (it held
            rows: reconciled through the core) or `refresh` (a reference table reloaded).
        range_kind: how it was cut (`ctid`, `key`, `column`).
        ranges: each range's SQL predicate, by index.
        points: the snapshot points (`SnapshotPoint` JSON), the first the load's own, one
            more per resume.
        batch_base: range `i` commits under batch id `batch_base + 1 + i`; the hand-over
            under `batch_base + len(ranges) + 2` (after a resume's changed rows, `+ 1`).
        status: `loading` until every range is in every layer and the hand-over committed.
        rows: rows loaded (when done).
        source: the pipeline source the table belongs to.
        started_at, finished_at: ISO 8601.
        relfilenode: the table's storage id when the load began: a table rewritten since
            (VACUUM FULL, CLUSTER) moved its rows between ranges, so a resume starts over.
    """

    table: str
    load_id: str
    kind: Kind
    range_kind: str
    ranges: list[str]
    points: list[str]
    batch_base: int
    source: str = ""
    status: Status = "loading"
    rows: int = 0
    started_at: str = ""
    finished_at: str | None = None
    relfilenode: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def handover_batch(self) -> int:
        """The batch id of the commit that hands the table over to the stream."""
        return self.batch_base + len(self.ranges) + 2

    @property
    def resume_batch(self) -> int:
        """The batch id of a resume's changed rows (reconciled through the core)."""
        return self.batch_base + len(self.ranges) + 1

    def range_batch(self, index: int) -> int:
        return self.batch_base + 1 + index

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadState:
        data: dict[str, Any] = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class LoadLog:
    """Reads and appends `<lake>/_tidemark/loads`."""

    def __init__(
        self, root: str, *, app_id: str, storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.handle = DeltaHandle(
            table_uri(root, "_tidemark", "loads"),
            app_id=f"{app_id}:_loads",
            storage_options=storage_options,
        )
        self.handle.open()

    def record(self, state: LoadState) -> None:
        """Append the new state of a load (the newest row of a table wins)."""
        row = {
            "table": state.table,
            "load_id": state.load_id,
            "state": state.to_json(),
            "written_at": datetime.now(UTC),
        }
        data = pa.Table.from_pylist([row], schema=SCHEMA)
        retry_conflicts(
            self.handle,
            lambda: self.handle.commit(data, batch_id=0, position=None),
        )

    def latest(self) -> dict[str, LoadState]:
        """The newest state of every table's load."""
        self.handle.refresh()
        if self.handle.dt is None:
            return {}
        rows = self.handle.read().sort_by("written_at").to_pylist()
        states: dict[str, LoadState] = {}
        for row in rows:
            states[str(row["table"])] = LoadState.from_json(str(row["state"]))
        return states

    def of(self, table: str) -> LoadState | None:
        """The newest state of `table`'s load (None: never loaded by the loader)."""
        return self.latest().get(table)

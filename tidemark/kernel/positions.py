"""What the lake remembers of each source: the record that makes the lake the source of truth.

Written with every batch into the batch log (`sinks/batch_log.py`, column `sources`), one
JSON document per source. On start (`tidemark/startup.py`) it says where capture resumes
(the Debezium offsets the lake holds up to), which database the lake was built from (a
replaced database is refused, not mixed in), which tables are armed (snapshotted into this
lake) and which snapshots are under way (`Arming`: crash-safe, a restart completes them).
The embedded runner keeps it up to date (`stream_processors/embedded/arming.py`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ArmingKind = Literal["initial", "incremental"]


@dataclass
class Arming:
    """A snapshot of one table under way into a lake.

    Attributes:
        id: the snapshot's id: the signal's for an incremental snapshot (Debezium's
            notifications carry it), `initial-<n>` for Debezium's initial snapshot.
        kind: `initial` (Debezium snapshots every table before it streams) or `incremental`
            (chunks read while streaming goes on).
        since: when it began (ISO 8601, UTC): rows the snapshot shows to have vanished are
            closed at this instant.
        reconcile: the lake held rows of the table when it began: the keys the snapshot and
            the stream bring are kept (`sinks/arming.py`), and at completion every lake row
            whose key did not come is deleted from live and closed in forensic.
        rows: snapshot rows received so far (progress for `tidemark resync`).
    """

    id: str
    kind: ArmingKind
    since: str
    reconcile: bool
    rows: int = 0


LOAD_PREFIX = "load-"
"""Arming ids (`SourceRecord.armed`) of tables the parallel loader armed."""


@dataclass
class SourceRecord:
    """What the lake holds of one source.

    Attributes:
        source: the source name.
        system_id: the Postgres cluster's system identifier the lake was built from.
        database: the database name; `database_oid` its OID.
        slot: the replication slot the offsets belong to.
        epoch: the position epoch (`connectors/decode/position.py`): raised when a new
            database is adopted, so its positions sort after everything the lake holds.
        offsets: the Debezium offsets file entries the lake holds everything up to; None
            before the first commit, or after a new database was adopted.
        armed: table -> id of the snapshot that armed it.
        arming: table -> the snapshot under way.
        tables: table -> the highest position committed to it (a table whose layers hold
            less was restored or removed, and is snapshotted again).
        rebuild: the next start snapshots every table again (a new database was adopted).
    """

    source: str
    system_id: str | None = None
    database: str | None = None
    database_oid: int | None = None
    slot: str | None = None
    epoch: int = 0
    offsets: dict[str, str] | None = None
    armed: dict[str, str] = field(default_factory=dict)
    arming: dict[str, Arming] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    rebuild: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SourceRecord:
        data: dict[str, Any] = json.loads(text)
        arming = {t: Arming(**a) for t, a in (data.pop("arming", None) or {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known}, arming=arming)

    def copy(self) -> SourceRecord:
        return SourceRecord.from_json(self.to_json())

"""Start-up reconciliation: where capture resumes is decided by the lake, on every start.

Debezium resumes from its offsets file and Postgres streams from the replication slot; both
live outside the lake and can disagree with it (the lake deleted, moved, restored from an
older copy; the state directory deleted; the slot dropped; another database behind the same
pipeline name). So on every start of `run`/`up`, per source, the lake's record
(`SourceRecord`, last row of the batch log) is compared with the source:

- the slot confirmed no more than the lake holds: resume from the lake's offsets (the
  state directory's are overwritten with them);
- the lake holds nothing of the source: a fresh start (the slot is dropped, Debezium
  snapshots every table);
- the slot is gone, or confirmed beyond what the lake holds (a lake restored from an older
  copy), or the initial snapshot never completed, or the database was dropped and created
  again: every table is snapshotted again on a new slot, reconciled with the lake;
- a table the lake does not hold (added to the config; its lake tables removed or restored
  from an older copy): that table alone is snapshotted again while the others stream;
- another cluster (system identifier) than the lake was built from: refused (exit 2),
  `tidemark resync` adopts it.

A re-snapshot is reconciled with what the lake holds (`stream_processors/embedded/arming.py`):
unchanged rows add nothing, changed rows one version, vanished rows are deleted from live and
closed in forensic. `arm_tables` is the seam through which a table is snapshotted again while
streaming goes on by Debezium's incremental snapshot; the parallel loader takes the tables
it arms before the engine opens (`tidemark/startload.py`) and leaves this seam the tables
configured `snapshot: {loader: debezium}`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.debezium.offsets import (
    clear_offsets,
    offset_values,
    offsets_lsn,
    write_offsets,
)
from tidemark.connectors.errors import SourceUnavailable
from tidemark.connectors.postgres.identity import (
    SlotState,
    SourceIdentity,
    drop_slot_when_free,
    slot_state,
    source_identity,
)
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.snapshot import format_lsn
from tidemark.kernel.errors import UsageError
from tidemark.kernel.positions import LOAD_PREFIX, SourceRecord
from tidemark.sinks.lake import Lake

logger = logging.getLogger(__name__)


class SourceReplacedError(UsageError):
    """The source is another database than the one the lake was built from (exit 2)."""


class SlotInUseError(UsageError):
    """Another consumer streams from the pipeline's replication slot (exit 2)."""


@dataclass
class SourceStart:
    """How one source starts.

    Attributes:
        record: what the lake holds of it, as the run starts (the tracker's first record).
        fresh: the engine starts without offsets on a new slot: Debezium's initial snapshot.
        resnapshot: `schema.table` names snapshotted again while streaming goes on.
        reasons: what was found, one line each (logged, and shown by `run`).
    """

    record: SourceRecord
    fresh: bool = False
    resnapshot: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def initial_snapshot_done(record: SourceRecord) -> bool:
    """Whether the lake's record shows Debezium's initial snapshot of the source complete.

    Only when the offsets name a position to resume from and carry no snapshot-in-progress
    marker: records polled during the snapshot can carry offsets without any marker (its
    `STARTED` notice comes with an empty offset, `{}` or `{"ts_usec": 0}`), and an idle
    checkpoint can put such offsets in the lake while the snapshot runs; read as "done", the
    restart streamed on and the rest of the snapshot was never read.

    Offsets of a streamed change mean every snapshot row before it is in the lake, even when
    the batch holding the snapshot's `COMPLETED` notice was not committed yet (the engine
    may stream before it delivers the notice): that snapshot is done (`reconcile_source`
    marks its tables armed). A snapshot that reconciles is not: what its completion does
    (closing the rows it did not read) has not happened, so it is taken again.
    """
    if not record.offsets or offsets_lsn(record.offsets) is None:
        return False
    values = offset_values(record.offsets)
    snapshot = values.get("snapshot")
    if snapshot in (True, "true", "INITIAL") and not values.get("last_snapshot_record"):
        return False
    return not any(a.kind == "initial" and a.reconcile for a in record.arming.values())


def streams_from_loads(record: SourceRecord) -> bool:
    """Whether the parallel loader armed every table and the stream has recorded no position
    yet (stopped before its first batch closed a transaction: inside one committed in parts,
    say; its offsets are then none, or Debezium's positionless `{}`). The stream resumes
    from the loads' slot, which holds every change since the loads' markers: nothing is
    left unfinished, unlike a Debezium snapshot stopped half-way."""
    return (
        offsets_lsn(record.offsets) is None
        and not record.arming
        and bool(record.armed)
        and all(a.startswith(LOAD_PREFIX) for a in record.armed.values())
    )


def incremental_collections(offsets: dict[str, str] | None) -> list[str]:
    """The tables an incremental snapshot recorded in the offsets still has to read."""
    text = offset_values(offsets).get("incremental_snapshot_collections")
    if not text:
        return []
    return [str(c.get("incremental_snapshot_collections_id")) for c in json.loads(str(text))]


def _tables_present(lake: Lake, config: PipelineConfig, source: SourceConfig) -> bool:
    return any(
        lake.applied_position(t, config.layers_for(t)) is not None
        for t in config.lake_tables_of(source)
    )


def _free_slot(dsn: str, slot: str, *, wait_s: float = 15.0) -> SlotState | None:
    """The slot's state once no consumer streams from it (a killed run's walsender may
    linger a moment).

    Raises:
        SlotInUseError: still streamed from after `wait_s`.
    """
    deadline = time.monotonic() + wait_s
    while True:
        state = slot_state(dsn, slot)
        if state is None or state.active_pid is None:
            return state
        if time.monotonic() > deadline:
            raise SlotInUseError(
                f"replication slot `{slot}` is in use by server process {state.active_pid}: "
                "another consumer (a `tidemark run` of this pipeline elsewhere?) streams from it",
                hint="stop that consumer first, or give this pipeline another name",
            )
        time.sleep(0.5)


def reconcile_source(
    config: PipelineConfig, source: SourceConfig, lake: Lake, *, config_path: str = "FILE"
) -> SourceStart:
    """Compare what the lake holds of `source` with the source; say how capture starts.

    Raises:
        SourceReplacedError: the source is another cluster than the lake's.
        SlotInUseError: another consumer streams from the slot.
        SourceUnavailable: the source cannot be reached.
    """
    slot_name = replication_name(config.pipeline, source.name)
    identity = source_identity(source.dsn)
    slot = _free_slot(source.dsn, slot_name)
    text = lake.source_records().get(source.name)
    tables = config.lake_tables_of(source)
    if text is None:
        record = _new_record(source.name, identity, slot_name, epoch=0)
        held = _tables_present(lake, config, source)
        why = (
            "the lake holds tables of it but no record of its positions (written before "
            "Tidemark kept one)"
            if held
            else f"the lake at `{config.lake}` holds nothing of it"
        )
        return SourceStart(record, fresh=True, reasons=[f"{why}: every table is snapshotted"])
    record = SourceRecord.from_json(text)
    if record.system_id and record.system_id != identity.system_id:
        shown = ", ".join(f"`{t}`" for t in tables[:3]) + (" ..." if len(tables) > 3 else "")
        raise SourceReplacedError(
            f"{shown} hold changes of another database than source `{source.name}` is now "
            f"(cluster {identity.system_id}, the lake's {record.system_id}): its positions "
            "cannot continue the lake's",
            hint=(
                f"to re-snapshot every table of `{source.name}` into this lake (history kept, "
                f"vanished rows closed): tidemark resync --config {config_path} "
                f"--source {source.name}; or point `lake:` at a new location"
            ),
        )
    lsn = offsets_lsn(record.offsets)
    reasons: list[str] = []
    if record.rebuild:
        reasons.append("a new database was adopted (`tidemark resync`)")
    elif record.database_oid is not None and record.database_oid != identity.database_oid:
        reasons.append(f"database `{identity.database}` was dropped and created again")
    elif not initial_snapshot_done(record) and not streams_from_loads(record):
        reasons.append("its initial snapshot did not complete")
    elif slot is None:
        reasons.append(
            f"replication slot `{slot_name}` is gone, so the changes after "
            f"{format_lsn(lsn or 0)} cannot be read"
        )
    elif slot.confirmed_lsn is not None and lsn is not None and slot.confirmed_lsn > lsn:
        reasons.append(
            f"the slot confirmed {format_lsn(slot.confirmed_lsn)} but the lake holds changes "
            f"up to {format_lsn(lsn)} only (a lake restored from an older copy, or another "
            "consumer of the slot)"
        )
    if reasons:
        fresh = _new_record(source.name, identity, slot_name, epoch=record.epoch)
        fresh.tables = dict(record.tables)
        reasons[-1] += ": every table is snapshotted again, reconciled with the lake"
        return SourceStart(fresh, fresh=True, reasons=reasons)
    record.system_id, record.database_oid = identity.system_id, identity.database_oid
    record.database, record.slot = identity.database, slot_name
    # A table left out of the config was not captured meanwhile: back in, it is new again.
    record.armed = {t: a for t, a in record.armed.items() if t in tables}
    record.arming = {t: a for t, a in record.arming.items() if t in tables}
    for name, arming in list(record.arming.items()):
        if arming.kind == "initial":  # done (initial_snapshot_done): its COMPLETED was not
            record.armed[name] = arming.id  # committed before the stop, its rows were
            del record.arming[name]
    pending = set(incremental_collections(record.offsets))
    start = SourceStart(record)
    for table in source.tables:
        name = source.lake_table(table)
        applied = lake.applied_position(name, config.layers_for(name))
        expected = record.tables.get(name)
        if name in record.arming or table in pending:
            continue  # its snapshot is under way: Debezium resumes it from the offsets
        if expected is not None and (applied is None or applied < expected):
            record.armed.pop(name, None)
            start.resnapshot.append(table)
            start.reasons.append(
                f"table `{name}`: the lake holds it "
                + ("no more" if applied is None else "only up to an older position")
                + " (removed, or restored from a copy): snapshotted again"
            )
        elif name not in record.armed:
            start.resnapshot.append(table)
            start.reasons.append(
                f"table `{name}` is new to the lake: snapshotted"
                if expected is None
                else f"table `{name}` was not captured for a while: snapshotted again"
            )
    return start


def _new_record(source: str, identity: SourceIdentity, slot: str, *, epoch: int) -> SourceRecord:
    return SourceRecord(
        source,
        system_id=identity.system_id,
        database=identity.database,
        database_oid=identity.database_oid,
        slot=slot,
        epoch=epoch,
    )


def prepare_capture(
    dsn: str, slot: str, directory: Path, record: SourceRecord, *, keep_slot: bool = False
) -> None:
    """Make the engine about to open in `directory` resume from exactly what the lake holds.

    With offsets in the lake they are written over the state directory's. Without them (or
    with an initial snapshot that never completed) the engine starts from nothing on a new
    slot: a slot kept from before would make Debezium's snapshot inconsistent with it. With
    `keep_slot` the slot was just made for the parallel loader's snapshots
    (`tidemark/startload.py`), which the engine streams on from: it is kept.
    """
    if record.offsets and initial_snapshot_done(record):
        write_offsets(directory, record.offsets)
        return
    clear_offsets(directory)
    if keep_slot:
        return
    if slot_state(dsn, slot) is not None:
        try:
            drop_slot_when_free(dsn, slot)
        except psycopg2.errors.ObjectInUse as exc:
            raise SourceUnavailable(
                f"replication slot `{slot}` is still in use; it must be dropped to snapshot "
                "the tables from scratch",
                hint="retrying; stop any other consumer of it",
            ) from exc
        logger.info("dropped replication slot %s: the tables are snapshotted from scratch", slot)


def arm_tables(
    dsn: str,
    pipeline: str,
    source: str,
    tables: list[str],
    surrogate_keys: dict[str, str] | None = None,
) -> str:
    """Snapshot `tables` of a running (or next-started) source again while it streams,
    reconciled with the lake.

    The seam for how a table is (re)loaded into the lake: today Debezium's incremental
    snapshot through the signal table (`request_snapshot(..., reconcile=True)`); the lake
    side (`stream_processors/embedded/arming.py`, `reconcile.py`) follows it through
    Debezium's notifications and reconciles the result with what the lake holds.

    Returns:
        The snapshot's id (its notifications carry it; the lake records it when done).
    """
    from tidemark.connectors.postgres.capture import request_snapshot, signal_table_name

    return request_snapshot(
        dsn,
        signal_table_name(pipeline, source),
        tables,
        reconcile=True,
        surrogate_keys=surrogate_keys,
    )

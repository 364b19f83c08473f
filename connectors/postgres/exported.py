"""A snapshot that parallel readers share, at a position the change stream can be cut at.

The loader's workers each read some ranges of a table; they must all see the same state,
and the lake must know exactly which streamed changes that state already holds. So:

1. **Marker.** A transaction writes a row into the pipeline's signal table (a Debezium `log`
   signal: captured, never delivered as data) and, inside it, reads the WAL insert position
   K. The signal table is published, so Debezium sees the marker's COMMIT, and every change
   committed after the marker carries, as the commit part of its position (the previous
   commit Debezium saw, docs/decoding.md "Positions"), at least the marker's commit LSN,
   which is above K. A change whose commit part is below K was therefore committed before
   the marker.
2. **Snapshot.** After the marker committed, a REPEATABLE READ transaction exports its
   snapshot (`pg_export_snapshot()`); the workers import it (`SET TRANSACTION SNAPSHOT`).
   Its visibility (`pg_current_snapshot()`: xmin, xmax, the transactions in progress) says
   for every transaction id whether the snapshot holds its changes, and M, the WAL position
   read after it, bounds the commits it can hold.

The rows read get positions `(K, 0, n)`: after every change committed before the marker,
before every change committed after it. A streamed change between the two (commit part in
[K, M)) is in the snapshot exactly when its transaction is visible (`SnapshotPoint.visible`);
`stream_processors/loading/gate.py` drops those. With a replica (`snapshot.dsn`), the marker
is written on the primary and the snapshot exported on the replica once it has replayed past
the marker's commit; visibility and M then come from the replica, whose snapshot holds
exactly the transactions it has replayed.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
from psycopg2 import sql

from tidemark.connectors.errors import SourceUnavailable
from tidemark.connectors.postgres.snapshot import format_lsn, parse_lsn
from tidemark.kernel.secrets import mask

log = logging.getLogger(__name__)

_HEX4 = pa.array([f"{i:04x}" for i in range(1 << 16)], pa.string())
"""Every 4-hex-digit string: a row's 8-digit sequence number is two lookups."""
SEQ_SPAN = 2**32
"""Positions of snapshot rows end in 8 hex digits: this many rows per snapshot point."""


@dataclass(frozen=True)
class SnapshotPoint:
    """Where a load's snapshot sits in the change stream.

    Attributes:
        marker: K, read inside the marker transaction (see the module docstring).
        upper: M, the WAL position after the snapshot: it holds no commit at or above it.
        xmin, xmax, xip: the snapshot's visibility (32-bit transaction ids, as Debezium's
            `txId`): a committed id is visible iff below xmin, or below xmax and not in xip.
        taken_at: the source's clock at the marker's commit (ISO 8601): the rows' source
            time, from which their forensic versions are valid.
        epoch: the source's position epoch (top byte of the commit part).
    """

    marker: int
    upper: int
    xmin: int
    xmax: int
    xip: tuple[int, ...]
    taken_at: str
    epoch: int = 0

    @property
    def commit_part(self) -> str:
        """The commit part of this point's positions (16 hex digits)."""
        return f"{(self.epoch << 56) + self.marker:016x}"

    @property
    def upper_part(self) -> str:
        return f"{(self.epoch << 56) + self.upper:016x}"

    def position(self, seq: int) -> str:
        """The position of the snapshot row numbered `seq`."""
        return f"{self.commit_part}{0:016x}{seq:08x}"

    def positions(self, first: int, count: int) -> pa.Array:
        """`count` consecutive row positions from `first`, built by Arrow kernels (no per-row
        Python): the sequence number's high four digits are fixed within each run of 65,536
        numbers, so each run is one join of a prefix with a slice of the low digits (a
        third of the cost of looking up both halves row by row)."""
        if first + count > SEQ_SPAN:
            raise ValueError(f"more than {SEQ_SPAN} rows at one snapshot point")
        if not count:
            return pa.array([], pa.string())
        runs: list[pa.Array] = []
        number, end = first, first + count
        while number < end:
            high, low = divmod(number, 1 << 16)
            take = min(end - number, (1 << 16) - low)
            prefix = f"{self.commit_part}{0:016x}{high:04x}"
            runs.append(pc.binary_join_element_wise(prefix, _HEX4.slice(low, take), ""))
            number += take
        return runs[0] if len(runs) == 1 else pa.concat_arrays(runs)

    def visible(self, tx_ids: pa.Array) -> pa.BooleanArray:
        """Per transaction id (Debezium's `txId` text), whether this snapshot holds it."""
        ids = pc.cast(tx_ids, pa.int64())
        below = pc.less(ids, pa.scalar(self.xmin, pa.int64()))
        ended = pc.less(ids, pa.scalar(self.xmax, pa.int64()))
        if self.xip:
            running = pc.is_in(ids, value_set=pa.array(self.xip, pa.int64()))
            ended = pc.and_(ended, pc.invert(running))
        return pc.fill_null(pc.or_(below, ended), False)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SnapshotPoint:
        data: dict[str, Any] = json.loads(text)
        data["xip"] = tuple(data.get("xip") or ())
        return cls(**data)


@dataclass
class ExportedSnapshot:
    """An exported snapshot, open while its context lasts."""

    point: SnapshotPoint
    snapshot_id: str
    dsn: str

    def attach(self, cursor: Any) -> None:
        """Make `cursor`'s new transaction read this snapshot."""
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute("SET TRANSACTION SNAPSHOT %s", (self.snapshot_id,))


def _connect(dsn: str) -> Any:
    try:
        return psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise SourceUnavailable(
            f"cannot connect to Postgres at `{mask(dsn)}`: {str(exc).strip()}",
            hint="check the source (or the replica of `snapshot.dsn`) is up",
        ) from exc


def write_marker(dsn: str, signal_table: str, note: str) -> tuple[int, int, str]:
    """Commit the marker: (K, an LSN at or after the marker's commit, the clock at commit)."""
    schema, name = signal_table.split(".", 1)
    conn = _connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_insert_lsn()::text")
            marker = parse_lsn(_one(cur)[0])
            cur.execute(
                sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, 'log', %s)").format(
                    sql.Identifier(schema, name)
                ),
                (f"tidemark-load-{secrets.token_hex(6)}", json.dumps({"message": note})),
            )
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_current_wal_insert_lsn()::text,"
                " to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            )
            after, clock = _one(cur)
        return marker, parse_lsn(after), f"{clock}+00:00"
    finally:
        conn.close()


def _one(cur: Any) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:  # pragma: no cover (these queries always answer)
        raise RuntimeError("no row")
    return tuple(row)


def _wait_replayed(cur: Any, lsn: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        cur.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")
        recovering, replayed = _one(cur)
        if not recovering or (replayed and parse_lsn(replayed) >= lsn):
            return
        if time.monotonic() > deadline:
            raise SourceUnavailable(
                f"the replica has not replayed up to {format_lsn(lsn)} after {timeout_s:.0f} s",
                hint="check the replica's replication, or read from the primary",
            )
        time.sleep(0.1)


@contextmanager
def exported_snapshot(
    dsn: str,
    *,
    signal_table: str | None,
    note: str,
    replica_dsn: str | None = None,
    epoch: int = 0,
    replica_timeout_s: float = 300.0,
) -> Iterator[ExportedSnapshot]:
    """Write the marker (when `signal_table` is given) and export a snapshot after it.

    Without a signal table (a table no stream follows: reference refreshes, watermark
    capture) the point's K is the WAL position before the snapshot.

    Raises:
        SourceUnavailable: the source or the replica cannot be reached, or the replica lags.
    """
    if signal_table is not None:
        marker, committed, clock = write_marker(dsn, signal_table, note)
    else:
        marker = committed = 0
        clock = ""
    reader = _connect(replica_dsn or dsn)
    reader.autocommit = True  # the transaction below is begun and ended explicitly
    try:
        with reader.cursor() as cur:
            if replica_dsn:
                _wait_replayed(cur, committed, replica_timeout_s)
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(
                "SELECT pg_export_snapshot(), pg_current_snapshot()::text, pg_is_in_recovery(),"
                " to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            )
            snapshot_id, current, recovering, now = _one(cur)
            cur.execute(
                "SELECT pg_last_wal_replay_lsn()::text"
                if recovering
                else "SELECT pg_current_wal_insert_lsn()::text"
            )
            upper = parse_lsn(_one(cur)[0])
            xmin, xmax, xip = current.split(":")
            if signal_table is None:
                marker, clock = upper, f"{now}+00:00"
            point = SnapshotPoint(
                marker=marker,
                upper=upper,
                xmin=int(xmin) % 2**32,
                xmax=int(xmax) % 2**32,
                xip=tuple(int(x) % 2**32 for x in xip.split(",") if x),
                taken_at=clock,
                epoch=epoch,
            )
            log.info(
                "snapshot %s exported at marker %s (upper %s)",
                snapshot_id,
                format_lsn(marker),
                format_lsn(upper),
            )
            yield ExportedSnapshot(point, snapshot_id, replica_dsn or dsn)
    finally:
        reader.close()


def ensure_slot(dsn: str, slot: str) -> bool:
    """Create the logical replication slot `slot` (pgoutput) unless it exists; True if made.

    The stream must exist before a load's marker: Debezium then streams every change
    after the slot's start, and the marker cuts them into those the load holds and the rest.
    """
    conn = _connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if cur.fetchone() is not None:
                return False
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            log.info("created replication slot %s", slot)
            return True
    finally:
        conn.close()


def taken_at(point: SnapshotPoint) -> datetime:
    """The point's source time as a datetime (UTC)."""
    return datetime.fromisoformat(point.taken_at)

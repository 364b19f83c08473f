"""`capture: watermark`: a table's changes found by polling a watermark column.

For sources where log-based capture is not allowed (a read replica, a vendor database), a
table with a column every write sets (`modified_date`) is loaded once in full (the parallel
loader), then polled: each poll reads, in one snapshot, the rows whose watermark is at or
after the highest value seen minus `overlap`, and reconciles them with the lake through the
core like a snapshot (`reconcile.py`): a row identical to its key's open version adds
nothing (so the overlap costs nothing but reading), a changed row one forensic version, a
new key its first. Every `deletes_every` the keys are compared with the lake: keys gone at
the source are deleted from live and closed in forensic.

What this cannot see, by construction: versions a row went through between two polls (only
the one a poll finds is kept), the exact commit time of a change (versions are valid from
the poll's snapshot time), deletes until the next key comparison, and a change whose
watermark value is older than `overlap` behind the highest seen when it becomes visible (a
transaction running longer than the overlap, or a clock that went back).

Positions: each poll's rows sit at the WAL position its snapshot was taken at (Postgres
`pg_current_wal_insert_lsn()`, or the replica's replay position), which only grows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tidemark.connectors.postgres.columns import read_plans
from tidemark.connectors.postgres.copyread import TableReader
from tidemark.connectors.postgres.exported import exported_snapshot
from tidemark.connectors.postgres.loader import worker_connection
from tidemark.kernel.names import quote
from tidemark.sinks.bulk import BulkTable
from tidemark.sinks.lake import Lake
from tidemark.sinks.loads import LoadLog
from tidemark.stream_processors.loading.reconcile import Reconciler, source_keys
from tidemark.stream_processors.loading.spec import BatchIds, TableSpec, lake_ids

log = logging.getLogger(__name__)


@dataclass
class PollResult:
    """What one poll or key comparison did."""

    rows_read: int
    versions: int
    deletes: int
    watermark: str | None


class WatermarkPoller:
    """Polls one table by its watermark column (see the module docstring).

    Args:
        spec: the table.
        lake: the lake the polled tables are written through.
        loads: the load log (the highest watermark seen is kept in the table's load state).
        dsn: the source (or its replica).
        column: the watermark column (a timestamp, timestamptz or date).
        overlap_s: how far behind the highest watermark seen each poll reads again.
    """

    def __init__(
        self,
        spec: TableSpec,
        *,
        lake: Lake,
        loads: LoadLog,
        dsn: str,
        column: str,
        overlap_s: float,
        ids: BatchIds | None = None,
    ) -> None:
        self.spec = spec
        self.lake = lake
        self.loads = loads
        self.dsn = dsn
        self.column = column
        self.overlap_s = overlap_s
        self.ids = ids or BatchIds(lake_ids(lake))
        self.reconciler = Reconciler(
            lake,
            table=spec.table,
            source=spec.source,
            key_columns=spec.key_columns,
            layers=spec.layers,
            next_id=self.ids.take,
        )

    def _bulk(self) -> BulkTable:
        return BulkTable(
            self.lake,
            self.spec.table,
            layers=self.spec.layers,
            key_columns=self.spec.key_columns or ("_tm_row",),
            load_id="poll",
        )

    def watermark(self) -> str | None:
        """The highest watermark value seen (text), from the table's load state."""
        state = self.loads.of(self.spec.table)
        return None if state is None else state.extra.get("watermark")

    def _remember(self, value: str | None) -> None:
        state = self.loads.of(self.spec.table)
        if state is None or value is None or value == state.extra.get("watermark"):
            return
        state.extra["watermark"] = value
        self.loads.record(state)

    def poll(self) -> PollResult:
        """Read the rows changed since the last poll (minus the overlap) and reconcile them."""
        spec = self.spec
        seen = self.watermark()
        column = quote(self.column)
        with exported_snapshot(
            self.dsn, signal_table=None, note=f"tidemark: poll of {spec.table}"
        ) as snapshot:
            conn = worker_connection(snapshot.dsn, snapshot)
            try:
                cursor = conn.cursor()
                reader = self._reader(cursor)
                where = None
                if seen is not None:
                    where = (
                        f"{column} >= ({_literal(cursor, seen)}::{self._type(cursor)}"
                        f" - interval '{self.overlap_s} seconds')"
                    )
                parts = [block.rows for block, _ in reader.read(cursor, where)]
                rows = pa.concat_tables(parts) if parts else reader.arrow_schema.empty_table()
                top = self._highest(cursor, where)
            finally:
                conn.close()
        before = self.reconciler.versions
        self.reconciler.apply(rows, snapshot.point, 0)
        self._remember(top or seen)
        result = PollResult(rows.num_rows, self.reconciler.versions - before, 0, top or seen)
        log.info(
            "table %s: poll read %d row(s), %d new version(s)",
            spec.table,
            result.rows_read,
            result.versions,
        )
        return result

    def diff(self) -> PollResult:
        """Compare the keys: rows gone at the source are deleted and closed in the lake."""
        spec = self.spec
        with exported_snapshot(
            self.dsn, signal_table=None, note=f"tidemark: key diff of {spec.table}"
        ) as snapshot:
            conn = worker_connection(snapshot.dsn, snapshot)
            try:
                cursor = conn.cursor()
                reader = self._reader(cursor)
                present = source_keys(cursor, reader)
            finally:
                conn.close()
        gone = self.reconciler.vanished(self._bulk(), present, reader, snapshot.point, 1 << 31)
        if gone:
            log.info("table %s: %d row(s) deleted at the source", spec.table, gone)
        return PollResult(present.num_rows, 0, gone, self.watermark())

    def _reader(self, cursor: Any) -> TableReader:
        spec = self.spec
        plans = read_plans(cursor, spec.schema, spec.name)
        return TableReader(spec.table, spec.schema, spec.name, spec.kept(plans), spec.key_columns)

    def _type(self, cursor: Any) -> str:
        cursor.execute(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s",
            (self.spec.schema, self.spec.name, self.column),
        )
        row = cursor.fetchone()
        return "timestamptz" if row is None else str(row[0])

    def _highest(self, cursor: Any, where: str | None) -> str | None:
        """The highest watermark value the snapshot holds (text, exactly as Postgres prints)."""
        table = f"{quote(self.spec.schema)}.{quote(self.spec.name)}"
        column = quote(self.column)
        cursor.execute(
            f"SELECT max({column})::text FROM {table}"
            f" WHERE isfinite({column}){f' AND ({where})' if where else ''}"
        )
        row = cursor.fetchone()
        return None if row is None or row[0] is None else str(row[0])


def _literal(cursor: Any, value: str) -> str:
    """`value` as a quoted SQL literal (psycopg2's quoting)."""
    return str(cursor.mogrify("%s", (value,)).decode())

"""`tidemark status`: where each table of a pipeline stands, read from the lake and the source.

Per table: the last committed source position and commit time, rows per layer, dead letters.
Per source: the replication slot's lag behind the source's current WAL position in bytes,
and in seconds as the age of the newest source change the lake holds while that lag is not
zero (an idle source has no lag, however old its last change).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.kernel.columns import SOURCE_TS, Layer

logger = logging.getLogger(__name__)

POSITION_KEY = "tidemark.position"


@dataclass(frozen=True)
class TableStatus:
    """One lake table."""

    table: str
    position: str | None
    committed_at: datetime | None
    rows: dict[str, int]
    dead_letters: int
    newest_source_ts: datetime | None


@dataclass(frozen=True)
class SourceStatus:
    """One source and its slot."""

    source: str
    slot: str
    slot_active: bool | None
    lag_bytes: int | None
    lag_seconds: float | None
    error: str | None = None
    tables: list[TableStatus] = field(default_factory=list)


def _uri(root: str, *parts: str) -> str:
    base = root if "://" in root else os.path.abspath(root)
    return "/".join([base.rstrip("/"), *parts])


def _open(uri: str, options: Mapping[str, str]) -> DeltaTable | None:
    opts = dict(options) or None
    if not DeltaTable.is_deltatable(uri, storage_options=opts):
        return None
    return DeltaTable(uri, storage_options=opts)


def _last_commit(table: DeltaTable) -> tuple[str | None, datetime | None]:
    when: datetime | None = None
    for commit in table.history(50):
        if when is None and commit.get("timestamp"):
            when = datetime.fromtimestamp(commit["timestamp"] / 1000, UTC)
        if POSITION_KEY in commit:
            return str(commit[POSITION_KEY]), when
    return None, when


def _newest_source_ts(table: DeltaTable) -> datetime | None:
    actions = pa.table(table.get_add_actions(flatten=True))  # arro3 -> pyarrow
    column = f"max.{SOURCE_TS}"
    if column not in actions.column_names:
        return None
    value: datetime | None = pc.max(actions.column(column)).as_py()
    return value


def dead_letter_counts(root: str, options: Mapping[str, str]) -> dict[str, int]:
    """Dead letters per lake table (`(undecodable)` when the table is unknown)."""
    table = _open(_uri(root, "_tidemark", "dead_letters"), options)
    if table is None:
        return {}
    names = table.to_pyarrow_dataset().to_table(columns=["table"]).column("table").to_pylist()
    counts: dict[str, int] = {}
    for name in names:
        counts[name or "(undecodable)"] = counts.get(name or "(undecodable)", 0) + 1
    return counts


def table_status(config: PipelineConfig, table: str, letters: Mapping[str, int]) -> TableStatus:
    """Position, commit time and rows of one lake table."""
    rows: dict[str, int] = {}
    positions: list[str | None] = []
    times: list[datetime] = []
    newest: datetime | None = None
    for layer in Layer:
        dt = _open(_uri(config.lake, layer.value, table), config.storage_options)
        if dt is None:
            continue
        rows[layer.value] = dt.to_pyarrow_dataset().count_rows()
        position, when = _last_commit(dt)
        positions.append(position)
        if when:
            times.append(when)
        if layer is Layer.CHANGELOG:
            newest = _newest_source_ts(dt)
    known = [p for p in positions if p]
    position = min(known) if known and len(known) == len(positions) else None
    return TableStatus(
        table, position, max(times) if times else None, rows, letters.get(table, 0), newest
    )


def _slot_lag(source: SourceConfig, slot: str) -> tuple[bool | None, int | None, str | None]:
    import psycopg2

    try:
        conn = psycopg2.connect(source.dsn, connect_timeout=5)
    except psycopg2.Error as exc:
        return None, None, str(exc).strip().splitlines()[0]
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT active, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return None, None, f"no replication slot `{slot}` (has the pipeline run?)"
    return bool(row[0]), max(0, int(row[1] or 0)), None


def pipeline_status(config: PipelineConfig, *, source_lag: bool = True) -> list[SourceStatus]:
    """Status of every source and table of a pipeline."""
    from tidemark.connectors.postgres.settings import replication_name

    letters = dead_letter_counts(config.lake, config.storage_options)
    now = datetime.now(UTC)
    out = []
    for source in config.sources:
        tables = [table_status(config, t, letters) for t in config.lake_tables_of(source)]
        slot = replication_name(config.pipeline, source.name)
        active, lag, error = (None, None, None)
        if source_lag and source.kind == "postgres":
            active, lag, error = _slot_lag(source, slot)
        newest = max((t.newest_source_ts for t in tables if t.newest_source_ts), default=None)
        seconds = None
        if lag is not None:
            seconds = 0.0 if lag == 0 or newest is None else (now - newest).total_seconds()
        out.append(SourceStatus(source.name, slot, active, lag, seconds, error, tables))
    return out

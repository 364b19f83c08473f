"""Apply one table-wide change (DDL, TRUNCATE) to the lake, at its place among the rows.

Each kind does to the lake what it did to the source (docs/schema-changes.md):
- TRUNCATE, DROP TABLE, a table renamed away: every current row is deleted from live and its
  open forensic version closed at the change's commit time; the changelog gets one event
  (op `t`, or `x` for a table gone);
- a column added with a default (or rewritten by `ALTER ... TYPE ... USING`): every current
  row gets the value the source reports, as one update per row at the change's commit time;
- a column renamed or widened: every layer is rewritten with the new name or type;
- a narrowing or incompatible type change: the table is refused from there on (its events go
  to the dead letters with a reason naming the statement) until it is created again;
- a table created again under a captured name: a new generation (forensic `_tm_generation`);
- a partition attached (or a table renamed to a captured name): its rows are snapshotted
  incrementally; detached or dropped: its rows are deleted like a TRUNCATE's.
Every change is recorded in the schema log, last, so a replayed change is applied once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from tidemark.connectors.postgres.ddl_types import json_values, lake_type, type_change
from tidemark.kernel.columns import (
    BATCH,
    INGESTED_AT,
    OP,
    POSITION,
    SOURCE_TS,
    TX_ID,
    Layer,
    Op,
)
from tidemark.kernel.model import MilestonedTable, TableChanges
from tidemark.kernel.table_ops import TableOp
from tidemark.sinks.rewrite import ColumnChange
from tidemark.sinks.schema_log import REFUSED, SchemaChange
from tidemark.stream_processors.milestoning.core import milestone

logger = logging.getLogger(__name__)

_UTC_US = pa.timestamp("us", tz="UTC")
_CLOSING = {"truncate": Op.TRUNCATE, "drop_table": Op.DROP, "rename_table": Op.DROP}
_NEW_LIFE = ("create_table", "drop_table", "rename_table")


@dataclass(frozen=True)
class OpContext:
    """What applying one change needs.

    Attributes:
        lake: the lake facade (`sinks.lake.Lake`).
        layers: the table's layers.
        batch_id: the step's batch id.
        started: when the batch started (changelog `_tm_ingested_at`).
        positions: per source, what the step covers (the batch log row).
        keys: the table's key columns as the runtime knows them (config, decoder), if any.
        request_snapshot: asks the source for an incremental snapshot of a table
            (`schema.table`, optional SQL filter); None where the runtime cannot.
        closed_by: what closed the batch the change came in (the batch log records it).
        dead_letters: the batch's undecodable records, stored with this step's commit.
        split: source -> a transaction committed in parts that the batch holds part of.
        consistent: the lake holds whole source transactions after this step (None: the
            writer keeps no consistent cut); both go to the batch log.
    """

    lake: Any
    layers: frozenset[Layer]
    batch_id: int
    started: datetime
    positions: Mapping[str, str]
    keys: tuple[str, ...] | None = None
    request_snapshot: Callable[[str, str | None], None] | None = None
    closed_by: str | None = None
    dead_letters: tuple[Any, ...] = ()
    split: dict[str, str] = field(default_factory=dict)
    consistent: bool | None = None


def apply(group: Sequence[TableOp], ctx: OpContext) -> Any:
    """Apply one change (with the `rows` messages that follow it) unless it was applied
    before (a replay); record it in the schema log. Returns the lake's result of the step's
    commit (the batch log row is written either way)."""
    op = group[0]
    log = ctx.lake.schema_log
    if log.applied(op.table, op.position):
        return ctx.lake.commit_batch(
            ctx.batch_id,
            [],
            source_positions=ctx.positions,
            started_at=ctx.started,
            closed_by=ctx.closed_by,
            dead_letters=ctx.dead_letters,
            split=ctx.split,
            consistent=ctx.consistent,
        )
    generation = log.generation(op.table)
    refusal = log.refusal(op.table)
    rows = [o for o in group if o.kind == "rows"]
    committed: list[MilestonedTable] = []
    try:
        generation, outcome = _dispatch(op, rows, ctx, generation, refusal, committed)
    except (ValueError, KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        # Not transient, and no reason to stop every other table: say so where it shows.
        committed.clear()
        outcome = (
            f"not applied: {type(exc).__name__}: {exc}; the lake may differ from the source "
            f"until `tidemark resync --table {op.table.split('.', 1)[1]}`"
        )
    layers = {t.table: _kept(t, ctx) for t in committed}
    result = ctx.lake.commit_batch(
        ctx.batch_id,
        [t for t in committed if layers[t.table]],
        source_positions=ctx.positions,
        started_at=ctx.started,
        layers=layers,
        closed_by=ctx.closed_by,
        dead_letters=ctx.dead_letters,
        split=ctx.split,
        consistent=ctx.consistent,
    )
    change = SchemaChange(
        op.table,
        op.position,
        op.kind,
        {k: v for k, v in op.details.items() if k != "rows"}
        | {"rows": sum(_count(r) for r in rows)},
        op.ddl,
        _when(op),
        generation,
        outcome,
    )
    log.append([change], batch_id=ctx.batch_id)
    level = logging.WARNING if outcome.startswith(REFUSED) else logging.INFO
    logger.log(level, "table %s: %s at %s: %s", op.table, op.describe(), op.position, outcome)
    return result


def _dispatch(
    op: TableOp,
    rows: list[TableOp],
    ctx: OpContext,
    generation: int,
    refusal: str | None,
    committed: list[MilestonedTable],
) -> tuple[int, str]:
    """Apply `op` by its kind: (the generation after it, what was done)."""
    if refusal and op.kind not in _NEW_LIFE:
        return generation, f"skipped: {refusal}"
    if op.kind in _CLOSING:
        committed.append(_close(op, ctx))
        return generation, "applied"
    if op.kind == "create_table":
        return _create(op, ctx, generation)
    if op.kind == "add_column":
        committed += _fill(op, rows, ctx)
        return generation, "applied"
    if op.kind == "rename_column":
        return generation, _rename(op, ctx)
    if op.kind == "alter_type":
        outcome = _retype(op, ctx)
        if not outcome.startswith(REFUSED):
            committed += _fill(op, rows, ctx)
        return generation, outcome
    if op.kind in ("snapshot", "attach_partition"):
        return generation, _snapshot(op, ctx)
    if op.kind == "rows" and op.details.get("purpose") == "fill":
        committed += _fill(op, rows, ctx)
    elif op.kind in ("rows", "detach_partition", "drop_partition") and rows:
        committed.append(_delete(op, rows, ctx))
    # drop_column and columns added without a value: the lake keeps NULLs for them
    return generation, "applied"


def _count(op: TableOp) -> int:
    return len(op.details.get("rows") or ())


def _when(op: TableOp) -> datetime | None:
    if op.source_ts is None:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=op.source_ts)


def _kept(table: MilestonedTable, ctx: OpContext) -> frozenset[Layer]:
    """The layers a synthetic result goes to: only the changelog when the table has no
    current rows yet (empty live/forensic results must not create those tables)."""
    if table.live_deletes.num_rows or table.live_upserts.num_rows:
        return ctx.layers
    if table.forensic_inserts.num_rows or table.forensic_closes.num_rows:
        return ctx.layers
    return ctx.layers & {Layer.CHANGELOG} if table.changelog.num_rows else frozenset()


def _keys(op: TableOp, ctx: OpContext) -> tuple[str, ...]:
    """The key columns as the lake names them now (renames included), else as the change or
    the runtime names them."""
    keys = ctx.lake.key_columns(op.table) or op.details.get("keys") or ctx.keys
    if not keys:
        raise ValueError(f"the key columns of `{op.table}` are not known")
    return tuple(keys)


def _events(rows: pa.Table, op: TableOp, kind: Op) -> pa.Table:
    """`rows` as events of kind `kind` at the change's place: positions just after the
    change's own (its last 8 hex digits count up), its transaction and commit time."""
    n = rows.num_rows
    base, start = op.position[:-8], int(op.position[-8:], 16) + 1
    ts = pa.scalar(op.source_ts, pa.int64()).cast(_UTC_US)
    return (
        rows.append_column(OP, pa.repeat(pa.scalar(kind.value), n))
        .append_column(POSITION, pa.array([f"{base}{start + i:08x}" for i in range(n)]))
        .append_column(TX_ID, pa.repeat(pa.scalar(op.tx_id, pa.string()), n))
        .append_column(SOURCE_TS, pa.repeat(ts, n))
    )


def _milestone(op: TableOp, events: pa.Table, keys: tuple[str, ...], ctx: OpContext) -> Any:
    lake = ctx.lake
    current = lake.current_versions(op.table, events.select(list(keys)), ctx.layers)
    return milestone(
        TableChanges(op.table, keys, events),
        current,
        batch_id=ctx.batch_id,
        ingested_at=ctx.started,
        applied_position=lake.applied_position(op.table, ctx.layers),
    )


def _changelog_only(op: TableOp, ctx: OpContext, keys: tuple[str, ...]) -> MilestonedTable:
    empty = pa.table({k: pa.array([], pa.null()) for k in keys})
    return MilestonedTable(op.table, keys, empty, empty, empty, empty, empty, op.position)


def _close(op: TableOp, ctx: OpContext) -> MilestonedTable:
    """Every current row deleted at the change; one changelog event for the table."""
    code = _CLOSING[op.kind]
    marker = pa.table(
        {
            OP: pa.array([code.value]),
            POSITION: pa.array([op.position]),
            TX_ID: pa.array([op.tx_id], pa.string()),
            SOURCE_TS: pa.array([op.source_ts], pa.int64()).cast(_UTC_US),
            BATCH: pa.array([ctx.batch_id], pa.int64()),
            INGESTED_AT: pa.array([ctx.started], _UTC_US),
        }
    )
    rows = ctx.lake.current_rows(op.table, ctx.layers)
    if rows is None or rows.num_rows == 0:
        keys = tuple(ctx.keys or ())
        return dataclasses.replace(_changelog_only(op, ctx, keys), changelog=marker)
    keys = _keys(op, ctx)
    result = _milestone(op, _events(rows.select(list(keys)), op, Op.DELETE), keys, ctx)
    return dataclasses.replace(result, changelog=marker)


def _create(op: TableOp, ctx: OpContext, generation: int) -> tuple[int, str]:
    """A table created under a captured name: a new generation if the lake knew it."""
    kept = ctx.lake.key_columns(op.table)
    seen = bool(ctx.lake.schema_log.changes(op.table)) or kept is not None
    new = generation + 1 if seen else generation
    keys = tuple(op.details.get("keys") or ())
    if kept and keys and tuple(kept) != keys:
        return new, (
            f"{REFUSED}: `{op.table}` was created again with key ({', '.join(keys)}) but the "
            f"lake keeps it by ({', '.join(kept)}); move its lake tables aside to start afresh"
        )
    return new, f"applied: generation {new}"


def _rename(op: TableOp, ctx: OpContext) -> str:
    old, new = op.details["column"], op.details["to"]
    keys = tuple(ctx.lake.key_columns(op.table) or ctx.keys or ())
    keys = tuple(old if k == new else k for k in keys)  # the runtime may know the new name
    rows = ctx.lake.change_column(
        op.table,
        ColumnChange(old, rename_to=new),
        batch_id=ctx.batch_id,
        position=op.position,
        layers=ctx.layers,
        key_columns=keys,
    )
    return f"applied: renamed `{old}` to `{new}` ({rows} rows rewritten)"


def _retype(op: TableOp, ctx: OpContext) -> str:
    column = op.details["column"]
    verdict = type_change(
        op.details["from_type"],
        op.details["to_type"],
        time_zone=op.details.get("timezone"),
        column=column,
    )
    if not verdict.widens:
        return f"{REFUSED}: {verdict.reason} in {op.describe()} at {op.position}"
    assert verdict.to_type is not None
    change = ColumnChange(column, to_type=verdict.to_type, convert=verdict.convert)
    try:
        rows = ctx.lake.change_column(
            op.table,
            change,
            batch_id=ctx.batch_id,
            position=op.position,
            layers=ctx.layers,
            key_columns=tuple(ctx.lake.key_columns(op.table) or ctx.keys or ()),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return f"{REFUSED}: column `{column}` cannot widen to `{verdict.to_type}` ({exc})"
    return f"applied: `{column}` is `{verdict.to_type}` ({rows} rows rewritten)"


def _snapshot(op: TableOp, ctx: OpContext) -> str:
    if op.kind == "attach_partition" and not op.details.get("has_rows"):
        return "applied: the attached partition is empty"
    if ctx.request_snapshot is None:
        return "not applied: this runtime cannot request snapshots; run `tidemark resync`"
    source_table = op.table.split(".", 1)[1]
    condition = op.details.get("filter") if op.kind == "attach_partition" else None
    ctx.request_snapshot(source_table, condition)
    return f"applied: incremental snapshot of `{source_table}` requested"


def _message_rows(rows: Sequence[TableOp], current: pa.Table) -> tuple[pa.Table, list[str]]:
    """The rows the `rows` messages carry, typed like the lake's columns (new ones by their
    Postgres type), and the names of their columns."""
    first = rows[0].details
    names: list[str] = list(first["columns"])
    types: list[str] = list(first["types"])
    values = [r for op in rows for r in op.details.get("rows") or ()]
    arrays = []
    for i, (name, pg_type) in enumerate(zip(names, types, strict=True)):
        target = current.schema.field(name).type if name in current.column_names else None
        arrays.append(json_values([row[i] for row in values], pg_type, target))
    return pa.table(dict(zip(names, arrays, strict=True))), names


def _matching(current: pa.Table, found: pa.Table, on: list[str]) -> tuple[pa.Array, pa.Array]:
    """(row numbers in `current`, row numbers in `found`) of the rows that match on `on`.

    Joins row numbers only: payload columns of any type (lists, structs) stay out of the join.
    """
    left = current.select(on).append_column("__l", pa.array(range(current.num_rows), pa.int64()))
    right = found.select(on).append_column("__r", pa.array(range(found.num_rows), pa.int64()))
    pairs = left.join(right, on, join_type="inner").sort_by("__l")
    return pairs.column("__l").combine_chunks(), pairs.column("__r").combine_chunks()


def _fill(op: TableOp, rows: Sequence[TableOp], ctx: OpContext) -> list[MilestonedTable]:
    """One update per current row, with the column set to the value the source reports."""
    details = op.details
    column = details.get("column")
    if column is None or (details.get("fill") != "value" and not rows):
        return []
    current = ctx.lake.current_rows(op.table, ctx.layers)
    if current is None or current.num_rows == 0:
        return []
    keys = _keys(op, ctx)
    source = current.drop_columns([POSITION])
    if details.get("fill") == "value":
        pg_type = details["type"]
        target = source.schema.field(column).type if column in source.column_names else None
        value = json_values([details["value"]], pg_type, target or lake_type(pg_type))
        updated = _set(source, column, pa.repeat(value[0], source.num_rows))
    else:
        found, names = _message_rows(rows, source)
        on = [n for n in names if n != column]
        mine, theirs = _matching(source, found, on)
        updated = _set(source.take(mine), column, found.column(column).take(theirs))
    if updated.num_rows == 0:
        return []
    return [_milestone(op, _events(updated, op, Op.UPDATE), keys, ctx)]


def _set(rows: pa.Table, column: str, values: pa.Array) -> pa.Table:
    if column in rows.column_names:
        index = rows.schema.get_field_index(column)
        return rows.set_column(index, pa.field(column, values.type), values)
    return rows.append_column(pa.field(column, values.type), values)


def _delete(op: TableOp, rows: Sequence[TableOp], ctx: OpContext) -> MilestonedTable:
    """Deletes of the current rows whose keys the `rows` messages name (a partition that
    left the table), at the change's commit time."""
    keys = _keys(op, ctx)
    current = ctx.lake.current_rows(op.table, ctx.layers)
    if current is None or current.num_rows == 0 or not rows:
        return _changelog_only(op, ctx, keys)
    found, names = _message_rows(rows, current)
    mine, _ = _matching(current, found, names)
    gone = current.take(mine).select(list(keys))
    if gone.num_rows == 0:
        return _changelog_only(op, ctx, keys)
    return _milestone(rows[-1], _events(gone, rows[-1], Op.DELETE), keys, ctx)

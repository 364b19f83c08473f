"""One table per batch holding every key's history: its open version, then its new events.

The core reasons about each key as a short sequence: the version that is open in the lake
(from `current`, if any) followed by the batch's events for that key in source order. Sorting
the union of both by (key, origin, position) puts every such sequence in a contiguous run, so
"the previous version", "the next change" and "the last change" become shifts by one row.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import (
    OP,
    POSITION,
    SOURCE_TS,
    UNCHANGED_TOAST,
    VALID_FROM,
    VALID_TO,
    is_metadata,
)
from tidemark.stream_processors.milestoning import arrays
from tidemark.stream_processors.milestoning.errors import MilestoningError

# Working columns; the double underscore keeps them apart from any `_tm_` contract column.
ORD = "__tm_ord"  # the event's row number in the batch (-1 for a current version)
IS_CURRENT = "__tm_is_current"  # True for the version that was open before the batch
TS = "__tm_ts"  # when the row's version starts: source_ts of an event, valid_from of current

UTC_US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Timeline:
    """The sorted union of current versions and events, with its group structure.

    Attributes:
        rows: source columns, `_tm_op`, `_tm_position`, `_tm_unchanged` (if any events had
            it), and the working columns `ORD`, `IS_CURRENT`, `TS`; one chunk per column.
        key_columns: the key columns, in order.
        source_columns: the row-image columns (events' order first, then current-only ones).
        starts: True on the first row of each key's run.
    """

    rows: pa.Table
    key_columns: tuple[str, ...]
    source_columns: tuple[str, ...]
    starts: pa.BooleanArray

    def column(self, name: str) -> pa.Array:
        """One column as a single contiguous array."""
        return arrays.flat(self.rows.column(name))

    def filter(self, mask: pa.BooleanArray) -> Timeline:
        """The rows where `mask` holds, with the group structure recomputed."""
        rows = self.rows.filter(mask).combine_chunks()
        starts = _starts(rows, self.key_columns)
        return Timeline(rows, self.key_columns, self.source_columns, starts)

    def with_column(self, name: str, values: pa.Array) -> Timeline:
        """The same rows with one column's values replaced (same length, same order)."""
        index = self.rows.schema.get_field_index(name)
        rows = self.rows.set_column(index, pa.field(name, values.type), values)
        return Timeline(rows, self.key_columns, self.source_columns, self.starts)


def _require(table: pa.Table, names: list[str], *, what: str, table_name: str) -> None:
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise MilestoningError(
            f"{what} for table `{table_name}` lack column(s) `{', '.join(missing)}`",
            table=table_name,
            hint="the decoder must emit the key columns and the _tm_ event columns",
        )


def _starts(rows: pa.Table, keys: tuple[str, ...]) -> pa.BooleanArray:
    return arrays.starts_of_runs([arrays.flat(rows.column(k)) for k in keys])


def _only_batch_keys(current: pa.Table, events: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """The open versions of the batch's keys only, when a caller passed many more.

    A semi join is far cheaper than sorting versions no event refers to. It joins the keys
    and row numbers only (Arrow's join refuses nested payload such as lists and structs),
    then takes the rows. If the key types differ between the two (the sort below reconciles
    them), everything is kept.
    """
    missing = [k for k in keys if k not in current.column_names]
    if missing:
        return current  # `build` reports the missing columns
    wanted = events.select(list(keys)).group_by(list(keys)).aggregate([])
    numbered = current.select(list(keys)).append_column(ORD, arrays.row_index(current.num_rows))
    try:
        hit = numbered.join(wanted, keys=list(keys), join_type="left semi").column(ORD)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return current
    return current.take(hit.combine_chunks())  # any order: `build` sorts everything


def build(
    events: pa.Table,
    current: pa.Table | None,
    *,
    table: str,
    key_columns: tuple[str, ...],
) -> Timeline:
    """Sort the current versions and the events into one run per key.

    Within a run the current version comes first, then the events by `_tm_position`, ties
    kept in arrival order.

    Raises:
        MilestoningError: a key or `_tm_` column is missing, or a column's type in the batch
            cannot be reconciled with its type in `current`.
    """
    if not key_columns:
        raise MilestoningError(
            f"table `{table}` has no key columns",
            table=table,
            hint="give the table a primary key or configure `keys` for it",
        )
    _require(events, [*key_columns, OP, POSITION, SOURCE_TS], what="events", table_name=table)
    source = [c for c in events.column_names if not is_metadata(c)]
    n = events.num_rows
    event_part = events.select([*source, OP, POSITION]).append_column(
        TS, events.column(SOURCE_TS).cast(UTC_US)
    )
    if UNCHANGED_TOAST in events.column_names:
        event_part = event_part.append_column(UNCHANGED_TOAST, events.column(UNCHANGED_TOAST))
    event_part = event_part.append_column(ORD, arrays.row_index(n)).append_column(
        IS_CURRENT, pa.repeat(False, n).cast(pa.bool_())
    )
    parts = [event_part]
    if current is not None and VALID_TO in current.column_names:
        current = current.filter(pc.is_null(current.column(VALID_TO)))  # open versions only
    if current is not None and current.num_rows > 2 * max(n, 1):
        current = _only_batch_keys(current, events, key_columns)
    if current is not None and current.num_rows > 0:
        _require(current, [*key_columns, POSITION, VALID_FROM], what="current", table_name=table)
        m = current.num_rows
        current_source = [c for c in current.column_names if not is_metadata(c)]
        current_part = current.select([*current_source, POSITION])
        current_op = current.column(OP) if OP in current.column_names else pa.nulls(m, pa.string())
        current_part = (
            current_part.append_column(OP, current_op)
            .append_column(TS, current.column(VALID_FROM).cast(UTC_US))
            .append_column(ORD, pa.repeat(-1, m).cast(pa.int64()))
            .append_column(IS_CURRENT, pa.repeat(True, m).cast(pa.bool_()))
        )
        source += [c for c in current_source if c not in source]
        parts.append(current_part)
    try:
        combined = pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MilestoningError(
            f"table `{table}`: the batch's column types do not match the lake's: {exc}",
            table=table,
            hint="a column changed type at the source; migrate the lake table first",
        ) from exc
    order = pc.sort_indices(
        combined,
        sort_keys=[
            *((k, "ascending") for k in key_columns),
            (IS_CURRENT, "descending"),
            (POSITION, "ascending"),
            (ORD, "ascending"),
        ],
    )
    rows = combined.take(order).combine_chunks()
    return Timeline(rows, key_columns, tuple(source), _starts(rows, key_columns))

"""A re-snapshot reconciled with what the lake holds: the lake side, on the commit thread.

While a table that the lake already holds rows of is snapshotted again, the keys of all its
events (the snapshot's rows and the changes streamed meanwhile) are kept with each batch
(`sinks/arming.py`). The batch that completes the snapshot reads the keys the lake holds
open, takes away the kept ones and this batch's, and deletes the rest: a row that neither
the snapshot read nor the stream touched since it began was gone from the source before
(`vanished_events`). Rows read again unchanged add nothing (the core drops a snapshot row
equal to its key's version), changed rows get one version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import OP, POSITION, SOURCE_TS, TX_ID, Layer, Op
from tidemark.kernel.model import TableChanges
from tidemark.sinks.arming import ArmingKeys, vanished
from tidemark.stream_processors.embedded.arming import Plan

logger = logging.getLogger(__name__)


class KeptKeysLake(Protocol):
    """What reconciling needs of the lake (`sinks.lake.Lake`)."""

    arming: ArmingKeys

    def open_keys(
        self, table: str, key_columns: Sequence[str], layers: frozenset[Layer]
    ) -> pa.Table | None: ...
    def applied_position(self, table: str, layers: frozenset[Layer]) -> str | None: ...


class Reconciler:
    """Keeps the keys of tables being snapshotted and deletes the rows a snapshot shows gone.

    Args:
        lake: the lake.
        layers: lake table -> the layers it is kept in.
        keys: lake table -> its key columns (for a table that has no event in the batch
            that completes its snapshot).
    """

    def __init__(
        self,
        lake: KeptKeysLake,
        *,
        layers: Mapping[str, frozenset[Layer]],
        keys: Mapping[str, tuple[str, ...]],
    ) -> None:
        self.lake = lake
        self.layers = layers
        self.keys = keys

    def changes(
        self, batch_id: int, changes: Mapping[str, TableChanges], plans: Sequence[Plan]
    ) -> dict[str, TableChanges]:
        """`changes` plus the deletes of vanished rows for snapshots the batch completes;
        keeps the keys of tables still being armed first."""
        out = dict(changes)
        for plan in plans:
            for table, arming_id in {*plan.seen.items(), *plan.queued.items()}:
                # The batch completing an arming hands its keys over directly (`here`); a
                # snapshot of the table asked for while that one ran, beginning in the same
                # batch or queued behind it, keeps them like any other.
                done = plan.completed.get(table)
                if table in out and (done is None or done.id != arming_id):
                    keys = out[table].events.select(list(out[table].key_columns))
                    self.lake.arming.append(table, arming_id, keys, batch_id=batch_id)
            for table, arming in plan.completed.items():
                if not arming.reconcile:
                    continue
                if table not in plan.vanished:  # once: a retry must not read the lake again
                    plan.vanished[table] = self._vanished(
                        table, arming.id, arming.since, out.get(table)
                    )
                found = plan.vanished[table]
                if found is not None:
                    out[table] = found
        return out

    def forget(self, plans: Sequence[Plan]) -> None:
        """After the batch committed: the snapshots it completed need their keys no more."""
        for plan in plans:
            for table, arming in plan.completed.items():
                if arming.reconcile:
                    self.lake.arming.discard(table)

    def _vanished(
        self, table: str, arming_id: str, since: str, here: TableChanges | None
    ) -> TableChanges | None:
        """`here` plus a delete for every lake row of `table` the snapshot did not show."""
        key_columns = here.key_columns if here is not None else self.keys.get(table)
        if not key_columns:
            logger.error("table %s: its key columns are unknown: vanished rows kept", table)
            return None
        layers = self.layers.get(table, frozenset(Layer))
        held = self.lake.open_keys(table, key_columns, layers)
        if held is None or held.num_rows == 0:
            return None
        seen = self.lake.arming.seen(table, arming_id, key_columns)
        if here is not None:
            seen = pa.concat_tables(
                [seen, here.events.select(list(key_columns))], promote_options="permissive"
            )
        gone = vanished(held, seen, key_columns)
        if gone.num_rows == 0:
            return None
        after = max(
            p
            for p in (
                self.lake.applied_position(table, layers),
                pc.max(here.events.column(POSITION)).as_py() if here is not None else None,
            )
            if p is not None
        )
        deletes = vanished_events(
            gone, after=after, since=since, like=here.events.schema if here else None
        )
        logger.warning(
            "table %s: %d row(s) vanished at the source while it was not read: deleted from "
            "live and closed in forensic at %s",
            table,
            gone.num_rows,
            since,
        )
        events = deletes if here is None else pa.concat_tables([here.events, deletes])
        return TableChanges(table, tuple(key_columns), events)


def vanished_events(
    keys: pa.Table,
    *,
    after: str,
    since: str,
    like: pa.Schema | None = None,
) -> pa.Table:
    """Delete events for `keys` (rows that vanished at the source while it was not read).

    Positions sort after `after` (the highest position of the table this batch or the lake
    holds) and before anything streamed later: the next commit LSN with event LSN 0, like
    snapshot rows (not a streamed change). They carry no transaction (`verify` counts them
    as the snapshot's) and the source time `since`, when the snapshot began: the instant the
    lake learns the rows were gone.

    Args:
        like: the schema of the batch's events of the table, to concatenate with them.
    """
    n = keys.num_rows
    commit = int(after[:16], 16) + 1
    positions = pa.array([f"{commit:016x}{0:016x}{i:08x}" for i in range(n)], pa.string())
    when = datetime.fromisoformat(since)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    schema = like or pa.schema(
        [
            *keys.schema,
            pa.field(OP, pa.string()),
            pa.field(POSITION, pa.string()),
            pa.field(TX_ID, pa.string()),
            pa.field(SOURCE_TS, pa.timestamp("us", tz="UTC")),
        ]
    )
    for item in schema:
        if item.name in keys.column_names:
            columns[item.name] = keys.column(item.name).cast(item.type)
        elif item.name == OP:
            columns[item.name] = pa.repeat(pa.scalar(Op.DELETE.value, item.type), n)
        elif item.name == POSITION:
            columns[item.name] = positions.cast(item.type)
        elif item.name == SOURCE_TS:
            columns[item.name] = pa.repeat(pa.scalar(when, item.type), n)
        else:
            columns[item.name] = pa.nulls(n, item.type)
    return pa.table(columns, schema=schema)

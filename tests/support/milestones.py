"""A small row-by-row reference milestoner, to drive the sinks before the core lands.

It follows the core's contract (docs/milestoning.md): every change is a version, an update equal
to the open version makes none, a delete closes the open version, replayed positions are
ignored. Tests compare the sinks' Delta tables against what this produces.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from tidemark.kernel import columns as c
from tidemark.kernel.model import MilestonedTable

TS = pa.timestamp("us", tz="UTC")


def event(op, position, ts, tx="tx", **row):
    """One change event as a dict (the row image plus `_tm_` columns)."""
    return {**row, c.OP: op, c.POSITION: position, c.TX_ID: tx, c.SOURCE_TS: ts}


def milestone_rows(
    table: str,
    key_columns: tuple[str, ...],
    schema: pa.Schema,
    events: list[dict],
    current: pa.Table | None,
    *,
    batch_id: int,
    ingested_at: datetime | None = None,
) -> MilestonedTable:
    """Milestone `events` (ordered) against the open versions `current`."""
    ingested_at = ingested_at or datetime.now(UTC)
    src = schema.names
    key = lambda row: tuple(row[k] for k in key_columns)  # noqa: E731
    open_: dict[tuple, dict] = {key(r): r for r in (current.to_pylist() if current else [])}
    before = dict(open_)
    new_versions: list[dict] = []
    fresh: set[int] = set()  # ids of versions opened in this batch
    closes: dict[tuple, dict] = {}
    live: dict[tuple, dict | None] = {}
    changelog = []
    for ev in events:
        k = key(ev)
        prev = open_.get(k)
        if prev is not None and ev[c.POSITION] <= prev[c.POSITION]:
            continue
        changelog.append(
            {
                **{n: ev.get(n) for n in src},
                c.OP: ev[c.OP],
                c.POSITION: ev[c.POSITION],
                c.TX_ID: ev[c.TX_ID],
                c.SOURCE_TS: ev[c.SOURCE_TS],
                c.BATCH: batch_id,
                c.INGESTED_AT: ingested_at,
            }
        )
        if ev[c.OP] != "d" and prev is not None and all(prev.get(n) == ev.get(n) for n in src):
            continue
        if prev is not None:
            if id(prev) in fresh:
                prev[c.VALID_TO] = ev[c.SOURCE_TS]
                prev[c.BATCH_OUT] = batch_id
            elif k in before:
                closes[k] = {
                    **{n: k[i] for i, n in enumerate(key_columns)},
                    c.VALID_TO: ev[c.SOURCE_TS],
                    c.BATCH_OUT: batch_id,
                }
            open_.pop(k)
        if ev[c.OP] == "d":
            live[k] = None
            continue
        version = {
            **{n: ev.get(n) for n in src},
            c.VALID_FROM: ev[c.SOURCE_TS],
            c.VALID_TO: None,
            c.BATCH_IN: batch_id,
            c.BATCH_OUT: None,
            c.OP: ev[c.OP],
            c.POSITION: ev[c.POSITION],
        }
        new_versions.append(version)
        fresh.add(id(version))
        open_[k] = version
        live[k] = {
            **{n: ev.get(n) for n in src},
            c.OP: ev[c.OP],
            c.POSITION: ev[c.POSITION],
            c.SOURCE_TS: ev[c.SOURCE_TS],
            c.BATCH: batch_id,
        }
    meta = lambda *fields: pa.schema([*schema, *fields])  # noqa: E731
    keys_schema = pa.schema([schema.field(k) for k in key_columns])
    changelog_schema = meta(
        (c.OP, pa.string()),
        (c.POSITION, pa.string()),
        (c.TX_ID, pa.string()),
        (c.SOURCE_TS, TS),
        (c.BATCH, pa.int64()),
        (c.INGESTED_AT, TS),
    )
    live_schema = meta(
        (c.OP, pa.string()), (c.POSITION, pa.string()), (c.SOURCE_TS, TS), (c.BATCH, pa.int64())
    )
    forensic_schema = meta(
        (c.VALID_FROM, TS),
        (c.VALID_TO, TS),
        (c.BATCH_IN, pa.int64()),
        (c.BATCH_OUT, pa.int64()),
        (c.OP, pa.string()),
        (c.POSITION, pa.string()),
    )
    close_schema = pa.schema([*keys_schema, (c.VALID_TO, TS), (c.BATCH_OUT, pa.int64())])
    deletes = [dict(zip(key_columns, k, strict=True)) for k, v in live.items() if v is None]
    return MilestonedTable(
        table=table,
        key_columns=key_columns,
        changelog=pa.Table.from_pylist(changelog, schema=changelog_schema),
        live_upserts=pa.Table.from_pylist([v for v in live.values() if v], schema=live_schema),
        live_deletes=pa.Table.from_pylist(deletes, schema=keys_schema),
        forensic_inserts=pa.Table.from_pylist(new_versions, schema=forensic_schema),
        forensic_closes=pa.Table.from_pylist(list(closes.values()), schema=close_schema),
        last_position=max((e[c.POSITION] for e in events), default=""),
    )


def pos(n: int) -> str:
    """A contract-shaped position (fixed-width lowercase hex) for integer `n`."""
    return f"{n:016x}{n:016x}{0:08x}"


def ts(second: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC).replace(second=0) + __import__("datetime").timedelta(
        seconds=second
    )

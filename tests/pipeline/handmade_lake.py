"""Hand-built Delta lakes for testing query/verify/status without the sinks.

Written with deltalake directly, in the DESIGN §3.2 layout and columns, from a story of
changes: each change is (op, key, row or None, position, source_ts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("balance", pa.decimal128(12, 2)),
        ("opened", pa.timestamp("us", tz="UTC")),
        ("active", pa.bool_()),
    ]
)


@dataclass
class Change:
    op: str
    row: dict
    position: str
    ts: datetime
    tx: str = "3"  # a Postgres xid (committed long ago: visible to any snapshot)


def pos(commit: int, event: int = 0) -> str:
    return f"{commit:016x}{event:016x}{0:08x}"


def row(id_: int, name: str | None, balance: str = "10.00", active: bool = True) -> dict:
    return {
        "id": id_,
        "name": name,
        "balance": Decimal(balance),
        "opened": T0 - timedelta(days=id_),
        "active": active,
    }


def story() -> list[Change]:
    """Insert 1, 2, 3; update 1; delete 2; a no-op update of 3; update 1 again."""
    changes = [
        Change("c", row(1, "ada"), pos(0x100), T0),
        Change("c", row(2, "bob"), pos(0x100, 1), T0),
        Change("c", row(3, "cy", "0.50"), pos(0x200), T0 + timedelta(seconds=1)),
        Change("u", row(1, "ada", "20.00"), pos(0x300), T0 + timedelta(seconds=2)),
        Change("d", row(2, "bob"), pos(0x400), T0 + timedelta(seconds=3)),
        Change("u", row(3, "cy", "0.50"), pos(0x500), T0 + timedelta(seconds=4)),
        Change("u", row(1, "ádá ☃", "-3.10", False), pos(0x600), T0 + timedelta(seconds=5)),
    ]
    return changes


def build(root: Path, table: str, changes: list[Change], *, batch: int = 1) -> None:
    """Write the three layers for `changes` (all in one batch) under `root`."""
    names = SCHEMA.names
    changelog = [
        {
            **c.row,
            "_tm_op": c.op,
            "_tm_position": c.position,
            "_tm_tx_id": c.tx,
            "_tm_source_ts": c.ts,
            "_tm_batch": batch,
            "_tm_ingested_at": T0,
        }
        for c in changes
    ]
    versions: list[dict] = []
    open_: dict[int, dict] = {}
    for c in changes:
        key = c.row["id"]
        previous = open_.get(key)
        if c.op == "d":
            if previous:
                previous["_tm_valid_to"] = c.ts
                previous["_tm_batch_out"] = batch
                del open_[key]
            continue
        if previous and all(previous[n] == c.row[n] for n in names):
            continue
        if previous:
            previous["_tm_valid_to"] = c.ts
            previous["_tm_batch_out"] = batch
        version = {
            **c.row,
            "_tm_valid_from": c.ts,
            "_tm_valid_to": None,
            "_tm_batch_in": batch,
            "_tm_batch_out": None,
            "_tm_op": c.op,
            "_tm_position": c.position,
        }
        versions.append(version)
        open_[key] = version
    live = [
        {
            **{n: v[n] for n in names},
            "_tm_op": v["_tm_op"],
            "_tm_position": v["_tm_position"],
            "_tm_source_ts": v["_tm_valid_from"],
            "_tm_batch": batch,
        }
        for v in open_.values()
    ]
    meta = [("_tm_op", pa.string()), ("_tm_position", pa.string())]
    schemas = {
        "changelog": pa.schema(
            [
                *SCHEMA,
                *meta,
                ("_tm_tx_id", pa.string()),
                ("_tm_source_ts", UTC_US),
                ("_tm_batch", pa.int64()),
                ("_tm_ingested_at", UTC_US),
            ]
        ),
        "forensic": pa.schema(
            [
                *SCHEMA,
                ("_tm_valid_from", UTC_US),
                ("_tm_valid_to", UTC_US),
                ("_tm_batch_in", pa.int64()),
                ("_tm_batch_out", pa.int64()),
                *meta,
            ]
        ),
        "live": pa.schema([*SCHEMA, *meta, ("_tm_source_ts", UTC_US), ("_tm_batch", pa.int64())]),
    }
    for layer, rows in (("changelog", changelog), ("forensic", versions), ("live", live)):
        data = pa.Table.from_pylist(rows, schema=schemas[layer])
        write_deltalake(str(root / layer / table), data, mode="overwrite")

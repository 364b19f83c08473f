"""The core's data types: what goes into milestoning and what comes out.

Input (DESIGN §3.1): one `TableChanges` per source table and batch, its `events` an Arrow
table ordered by `_tm_position` with the row-image columns typed from the source plus
  _tm_op          string   c | u | d | r
  _tm_position    string   fixed-width lowercase hex; lexicographic order == source order
  _tm_tx_id       string   source transaction id (Postgres txId, SQL Server commit LSN)
  _tm_source_ts   timestamp[us, UTC]  commit time
  _tm_before      struct   (optional) the before image with the row-image fields, NULL if absent
  _tm_unchanged   list<string> (optional) columns holding a TOAST placeholder (value NULL);
                  the core carries the previous version's value forward.
For a delete the row-image columns hold the before image (at least the key).

Output: one `MilestonedTable` per source table: the exact rows each layer must append,
upsert, delete or close. The sinks turn these into Delta commits; the core does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class TableChanges:
    """One source table's ordered events within one batch.

    Attributes:
        table: lake table name, `<source>.<schema>.<table>`.
        key_columns: the primary key (or configured key) columns, in order.
        events: the ordered change events (schema in the module docstring).
    """

    table: str
    key_columns: tuple[str, ...]
    events: pa.Table


@dataclass(frozen=True)
class MilestonedTable:
    """What one batch does to one table's three layers.

    Attributes:
        changelog: every event once, plus `_tm_batch` and `_tm_ingested_at` (append only).
        live_upserts: the last row per key whose last event is c/u/r: source columns plus
            `_tm_op`, `_tm_position`, `_tm_source_ts`, `_tm_batch`.
        live_deletes: key columns of the keys whose last event is a delete.
        forensic_inserts: new versions: source columns plus `_tm_valid_from`, `_tm_valid_to`
            (NULL while current), `_tm_batch_in`, `_tm_batch_out`, `_tm_op`, `_tm_position`.
        forensic_closes: key columns plus `_tm_valid_to` and `_tm_batch_out` for versions
            that were open before this batch and are closed by it.
        last_position: the highest `_tm_position` in the batch (for idempotent replays).
    """

    table: str
    key_columns: tuple[str, ...]
    changelog: pa.Table
    live_upserts: pa.Table
    live_deletes: pa.Table
    forensic_inserts: pa.Table
    forensic_closes: pa.Table
    last_position: str

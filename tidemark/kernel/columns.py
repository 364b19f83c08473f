"""Names shared by every layer: metadata columns, operations, layers.

Defined once here so the decoder, the core, the sinks and the queries agree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

PREFIX: Final = "_tm_"

# Change-event columns (DESIGN §3.1) as the decoder emits them.
OP: Final = "_tm_op"
POSITION: Final = "_tm_position"
TX_ID: Final = "_tm_tx_id"
SOURCE_TS: Final = "_tm_source_ts"
BEFORE: Final = "_tm_before"
UNCHANGED_TOAST: Final = "_tm_unchanged"

# Columns the sinks add (DESIGN §3.2).
BATCH: Final = "_tm_batch"
INGESTED_AT: Final = "_tm_ingested_at"
VALID_FROM: Final = "_tm_valid_from"
VALID_TO: Final = "_tm_valid_to"
BATCH_IN: Final = "_tm_batch_in"
BATCH_OUT: Final = "_tm_batch_out"
GENERATION: Final = "_tm_generation"  # forensic: 1, then +1 each time the table is re-created


class Op(StrEnum):
    """Debezium's operation codes."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # a snapshot row
    TRUNCATE = "t"  # changelog only: the table was emptied (one event per table)
    DROP = "x"  # changelog only: the table was dropped; a re-created one is a new generation


class Layer(StrEnum):
    """The three lake layers (DESIGN §3.2)."""

    CHANGELOG = "changelog"
    LIVE = "live"
    FORENSIC = "forensic"


# A table without a key (REPLICA IDENTITY FULL, no primary key): every row image is its own
# identity. The decoder adds ROW, a digest of the row image, as the table's key, and the core
# keeps COUNT, how many identical rows the source holds (docs/milestoning.md, "Tables
# without a key"). Both travel with the row through every layer like source columns.
ROW: Final = "_tm_row"
COUNT: Final = "_tm_count"
ROW_VALUED: Final = frozenset((ROW, COUNT))


def is_metadata(column: str) -> bool:
    """True for Tidemark's own columns that do not belong to a row's value.

    `_tm_row` and `_tm_count` (tables without a key) start with the prefix but are part of
    the row: they are kept, compared and versioned like the source columns.
    """
    return column.startswith(PREFIX) and column not in ROW_VALUED


# Physical columns the sinks add to a layer's Delta table (extra to DESIGN §3.2).
BUCKET: Final = "_tm_bucket"  # key-range (or key-hash) bucket; partition column of live/forensic
CURRENT: Final = "_tm_current"  # forensic partition flag: True for the open version of a key

"""Sortable, fixed-width source positions (`_tm_position`), one encoder per source kind.

Lowercase hex of fixed width, so comparing two positions as strings compares them in
source order. See docs/decoding.md ("Positions") for what Debezium gives and why:

Postgres  `{commit:016x}{lsn:016x}{seq:08x}` (40 chars)
    commit = `source.sequence[0]`, the LSN of the last commit before this transaction,
             plus the source's epoch in its top byte (`epoch << 56`; 0 until the database
             behind a source is replaced and `tidemark resync` adopts the new one, whose
             LSNs start over: positions keep sorting after everything the lake holds).
             pgoutput delivers transactions in commit order and all events of one
             transaction share this value, so it grows strictly from one transaction to
             the next. When Debezium has not seen a commit yet (the first transaction
             after a snapshot) it is null: we use max(event LSN, highest commit seen).
    lsn    = `source.lsn`, the event's own LSN (grows within a transaction).
    seq    = 0 for streamed events (bumped if two events share commit and LSN);
             snapshot rows (op r) share one LSN and get commit = that LSN, lsn = 0 and
             seq = a counter in arrival order, so they sort before everything streamed
             after the snapshot. Incremental-snapshot rows carry no LSN: they are emitted
             inside the transaction that closes their chunk's window, whose `sequence[0]`
             is their commit (after every change streamed before the window closed).
SQL Server `{commit_lsn:20}{change_lsn:20}{event_serial_no:08x}` (48 chars): the LSNs
    as Debezium prints them (`00000027:00000758:0005`) without the colons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PG_WIDTH = 40
SQLSERVER_WIDTH = 48
_ZERO_LSN = "0" * 20
EPOCH_SHIFT = 56
_LSN_MASK = (1 << EPOCH_SHIFT) - 1


def lsn_position(lsn: int, epoch: int = 0) -> str:
    """The Postgres position of a point in the WAL (no event there): `lsn` as commit, lsn 0.

    What the lake records for a stretch of the stream that carried no change (heartbeats)
    and what `verify` waits for: every transaction committed before `lsn` sorts below it.
    """
    return f"{(epoch << EPOCH_SHIFT) + lsn:016x}{0:016x}{0:08x}"


def position_lsn(position: str) -> tuple[int, int]:
    """(epoch, commit LSN) of a Postgres position."""
    commit = int(position[:16], 16)
    return commit >> EPOCH_SHIFT, commit & _LSN_MASK


@dataclass
class PositionState:
    """What the encoders remember between batches (a decoder owns one).

    Attributes:
        last_commit: the highest commit component seen (Postgres), for null sequences.
        snapshot_seq: the arrival counter for snapshot rows.
        epoch: the source's position epoch (in the top byte of every commit component).
        last_key: the (commit, lsn) pair of the previous streamed event, with its seq.
    """

    last_commit: int = 0
    snapshot_seq: int = 0
    epoch: int = 0
    last_key: tuple[Any, Any] = (None, None)
    last_seq: int = 0
    tx_last_position: dict[str, str] = field(default_factory=dict)

    def resume_from(self, position: str | None) -> None:
        """Seed from the highest position already applied (e.g. the lake's), after a restart."""
        if position and len(position) == PG_WIDTH:
            epoch, commit = position_lsn(position)
            if epoch > self.epoch:  # the lake's positions are in a later epoch already
                self.epoch, self.last_commit = epoch, 0
            if epoch == self.epoch:
                self.last_commit = max(self.last_commit, commit)
            self.snapshot_seq = max(self.snapshot_seq, int(position[32:], 16) + 1)


def _next_seq(state: PositionState, key: tuple[Any, Any]) -> int:
    if key == state.last_key:
        state.last_seq += 1
    else:
        state.last_key, state.last_seq = key, 0
    return state.last_seq


def postgres_position(source: dict[str, Any], op: str, state: PositionState) -> str:
    """The position of one Postgres event from its `source` block."""
    lsn = int(source.get("lsn") or 0)
    epoch = state.epoch << EPOCH_SHIFT
    if op == "r":
        commit = lsn
        if not lsn:
            # An incremental-snapshot row carries no LSN, only `sequence` = [the last commit
            # processed, ...]: it was read after that commit, so it sorts after that
            # commit's changes and before the next transaction's (seen on real events).
            commit = max(_first_lsn(source.get("sequence")) or 0, state.last_commit)
        state.last_commit = max(state.last_commit, commit)
        seq = state.snapshot_seq
        state.snapshot_seq += 1
        return f"{epoch + commit:016x}{0:016x}{seq:08x}"
    last_committed = _first_lsn(source.get("sequence"))
    commit = last_committed if last_committed is not None else max(lsn, state.last_commit)
    state.last_commit = max(state.last_commit, commit)
    seq = _next_seq(state, (commit, lsn))
    return f"{epoch + commit:016x}{lsn:016x}{seq:08x}"


def _first_lsn(sequence: str | None) -> int | None:
    """The first LSN of Debezium's `sequence` (`["<lsn>","<lsn>"]`), None when null."""
    if not sequence or not sequence.startswith('["'):
        return None
    first = sequence[2 : sequence.index(",") - 1]
    return int(first) if first else None


def _lsn_hex(value: str | None) -> str:
    if not value:
        return _ZERO_LSN
    text = value.replace(":", "").lower()
    if len(text) != 20:
        raise ValueError(f"unexpected SQL Server LSN `{value}`")
    return text


def sqlserver_position(source: dict[str, Any], op: str, state: PositionState) -> str:
    """The position of one SQL Server event: (commit_lsn, change_lsn, event_serial_no)."""
    commit = _lsn_hex(source.get("commit_lsn"))
    change = _lsn_hex(source.get("change_lsn"))
    serial = source.get("event_serial_no")
    if op == "r" or serial is None:
        # Snapshot rows carry the snapshot's LSN and no change LSN or serial number.
        seq = state.snapshot_seq
        state.snapshot_seq += 1
    else:
        seq = int(serial)
    return f"{commit}{change}{seq:08x}"

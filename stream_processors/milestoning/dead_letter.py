"""A change event that could not be decoded or applied (DESIGN §3.3, guarantee 5).

Lives next to the core's types so the sinks can store it without importing connectors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeadLetter:
    """One rejected event: its raw payload and why it was rejected.

    Attributes:
        table: lake table name, if known.
        raw_key: the record key as received (JSON text), if any.
        raw_value: the record value as received (JSON text), if any.
        reason: one line: what was wrong, with the value in backticks.
        origin: where the event came from (engine/topic/partition/offset).
        position: the source position, if it could be read.
    """

    table: str | None
    raw_key: str | None
    raw_value: str | None
    reason: str
    origin: str
    position: str | None

"""A record that could not be decoded or applied (DESIGN §3.3 guarantee 5).

It lives next to the core's data types so the sinks can store dead letters without
importing `connectors/`. The raw key and value are kept verbatim for replay by hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeadLetter:
    """One undecodable record.

    Attributes:
        table: lake table name when known (`<source>.<schema>.<table>`), else None.
        raw_key: the record key as received (JSON text), or None.
        raw_value: the record value as received (JSON text), or None.
        reason: one line: what failed, with the offending value in backticks.
        origin: where the record came from (e.g. `kafka:topic/partition@offset`).
        position: the source position when it could be read, else None.
    """

    table: str | None
    raw_key: str | None
    raw_value: str | None
    reason: str
    origin: str
    position: str | None

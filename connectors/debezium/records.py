"""The hand-over between the Debezium engine (or a Kafka consumer) and the decoder.

Debezium's JSON converter runs with `schemas.enable=true`: every value carries its Connect
schema, so types are exact without asking the source catalog, and the same decoder reads
the embedded engine and Kafka Connect topics alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as Debezium emitted it.

    Attributes:
        destination: Debezium's topic name: `<source>.<schema>.<table>` for Postgres,
            `<source>.<database>.<schema>.<table>` for SQL Server, `<source>.transaction`
            for transaction BEGIN/END markers, `__debezium-heartbeat.<source>` for heartbeats.
        key: the key as JSON (`{"schema":..., "payload":...}`), or None.
        value: the envelope as JSON (`{"schema":..., "payload": {before, after, source, op,
            ts_ms, transaction}}`), or None for a tombstone.
        origin: where it came from, for dead letters (e.g. `kafka:topic/partition@offset`).
    """

    destination: str
    key: str | None
    value: str | None
    origin: str = ""

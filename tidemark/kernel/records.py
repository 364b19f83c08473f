"""The hand-over between the Debezium engine (or a Kafka consumer) and the decoder.

A record arrives in one of two forms, and every type stays exact in both:
- enveloped (Kafka Connect topics, `schemas.enable=true`): key and value are
  `{"schema": ..., "payload": ...}`;
- bare (the embedded engine): key and value are only the payload, and the Connect schemas
  travel beside them as `key_schema`/`value_schema`: the engine sends each schema once per
  table version rather than once per event, which halves the JVM's work per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)  # not frozen: a frozen init costs 4x, and one is made per event
class RawRecord:
    """One record as Debezium emitted it (treat as immutable).

    Attributes:
        destination: Debezium's topic name: `<source>.<schema>.<table>` for Postgres,
            `<source>.<database>.<schema>.<table>` for SQL Server, `<source>.transaction`
            for transaction BEGIN/END markers, `__debezium-heartbeat.<source>` for heartbeats.
        key: the key as JSON, or None.
        value: the envelope as JSON (its payload is `{before, after, source, op, ts_ms,
            transaction}`), or None for a tombstone.
        origin: where it came from, for dead letters (e.g. `kafka:topic/partition@offset`).
        key_schema: the key's Connect schema as JSON when `key` is bare, else None.
        value_schema: the value's Connect schema as JSON when `value` is bare, else None.
            Records of one table version share the same string object.
    """

    destination: str
    key: str | None
    value: str | None
    origin: str = ""
    key_schema: str | None = None
    value_schema: str | None = None

    def payload(self) -> dict[str, Any]:
        """The value's payload (`{}` for a tombstone)."""
        if self.value is None:
            return {}
        parsed: dict[str, Any] = orjson.loads(self.value)
        return parsed if self.value_schema is not None else parsed["payload"]

    def key_payload(self) -> Any:
        """The key's payload (None without a key)."""
        if self.key is None:
            return None
        parsed = orjson.loads(self.key)
        return parsed if self.key_schema is not None else parsed["payload"]

    def enveloped(self) -> tuple[str | None, str | None]:
        """(key, value) in the Kafka Connect JSON form (`schemas.enable=true`).

        What a Debezium Kafka Connect worker writes to the topic for this record; dead
        letters keep this form so they stay self-describing.
        """
        return _envelope(self.key, self.key_schema), _envelope(self.value, self.value_schema)


def _envelope(text: str | None, schema: str | None) -> str | None:
    if text is None or schema is None:
        return text
    return f'{{"schema":{schema},"payload":{text}}}'

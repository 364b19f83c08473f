"""Change events as plain dicts, for `tidemark tail` (a kcat for CDC).

Until the decoder (`connectors.decode`) lands, events are printed from the raw Debezium
envelope: values as Debezium encodes them (dates as epoch days, decimals as base64 with a
scale), `position` as the event LSN in hex. Heartbeats are skipped; transaction BEGIN/END
markers are shown on request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from connectors.debezium.engine import EmbeddedEngine
from connectors.debezium.records import RawRecord


def lake_table(destination: str) -> str:
    """`<source>.<schema>.<table>`: SQL Server topics (`src.db.dbo.t`) drop the database."""
    parts = destination.split(".")
    return ".".join([parts[0], *parts[-2:]]) if len(parts) > 3 else destination


def raw_event(record: RawRecord, *, markers: bool = False) -> dict[str, Any] | None:
    """One record as a tail line, or None for heartbeats, tombstones and (by default) markers."""
    if record.value is None or record.destination.startswith("__debezium-heartbeat"):
        return None
    payload = orjson.loads(record.value)["payload"]
    if record.destination.endswith(".transaction"):
        if not markers:
            return None
        return {
            "marker": payload["status"],
            "tx": payload["id"].split(":")[0],
            "event_count": payload.get("event_count"),
        }
    source = payload.get("source") or {}
    lsn = source.get("lsn")
    key = orjson.loads(record.key)["payload"] if record.key else None
    return {
        "op": payload.get("op"),
        "table": lake_table(record.destination),
        "key": key,
        "position": f"{lsn:016x}" if isinstance(lsn, int) else source.get("change_lsn"),
        "tx": str(source.get("txId") or source.get("commit_lsn") or ""),
        "ts_ms": source.get("ts_ms"),
        "before": payload.get("before"),
        "after": payload.get("after"),
    }


def tail_events(
    engines: Sequence[EmbeddedEngine],
    *,
    markers: bool = False,
    max_events: int | None = None,
    idle_timeout: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield events from every engine as they arrive, acknowledging what was yielded.

    Stops after `max_events` change events (markers not counted) or after `idle_timeout`
    seconds without any record.
    """
    count = 0
    last_seen = time.monotonic()
    timeout = 0.5 / max(1, len(engines))
    while max_events is None or count < max_events:
        got_any = False
        for engine in engines:
            batch = engine.poll(timeout)
            if not batch:
                continue
            got_any = True
            for index, record in enumerate(batch):
                event = raw_event(record, markers=markers)
                if event is None:
                    continue
                yield event
                if "op" in event:
                    count += 1
                    if max_events is not None and count >= max_events:
                        engine.acknowledge(batch[index])
                        return
            engine.acknowledge(batch[-1])
        now = time.monotonic()
        if got_any:
            last_seen = now
        elif idle_timeout is not None and now - last_seen > idle_timeout:
            return

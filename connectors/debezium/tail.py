"""Change events as plain dicts, for `tidemark tail` (a kcat for CDC).

Events are decoded by `connectors.decode` (typed values, `_tm_position` positions) and shown
in arrival order; `raw_event` shows Debezium's own envelope instead (`--raw`): values as
Debezium encodes them (dates as epoch days, decimals as base64), `position` the event LSN.
Heartbeats are skipped; transaction BEGIN/END markers are shown on request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tidemark.connectors.debezium.engine import EmbeddedEngine
from tidemark.connectors.decode import Decoder
from tidemark.connectors.decode.decoder import SourceKind
from tidemark.kernel.columns import (
    BEFORE,
    OP,
    POSITION,
    SOURCE_TS,
    TX_ID,
    UNCHANGED_TOAST,
)
from tidemark.kernel.records import RawRecord


def lake_table(destination: str) -> str:
    """`<source>.<schema>.<table>`: SQL Server topics (`src.db.dbo.t`) drop the database."""
    parts = destination.split(".")
    return ".".join([parts[0], *parts[-2:]]) if len(parts) > 3 else destination


def raw_event(record: RawRecord, *, markers: bool = False) -> dict[str, Any] | None:
    """One record as a tail line, or None for heartbeats, tombstones and (by default) markers."""
    if record.value is None or record.destination.startswith("__debezium-heartbeat"):
        return None
    payload = record.payload()
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
    key = record.key_payload()
    named = all(source.get(k) for k in ("name", "schema", "table"))
    return {
        "op": payload.get("op"),
        # The source block names the table exactly; Debezium's topic name replaces spaces
        # and other characters a Kafka topic cannot hold.
        "table": f"{source['name']}.{source['schema']}.{source['table']}"
        if named
        else lake_table(record.destination),
        "key": key,
        "position": f"{lsn:016x}" if isinstance(lsn, int) else source.get("change_lsn"),
        "tx": str(source.get("txId") or source.get("commit_lsn") or ""),
        "ts_ms": source.get("ts_ms"),
        "before": payload.get("before"),
        "after": payload.get("after"),
    }


def _marker(record: RawRecord) -> dict[str, Any]:
    payload = record.payload()
    return {
        "marker": payload["status"],
        "tx": payload["id"].split(":")[0],
        "event_count": payload.get("event_count"),
    }


def decoded_events(
    records: Sequence[RawRecord], decoder: Decoder, *, markers: bool = False
) -> list[tuple[int, dict[str, Any]]]:
    """Decode a batch into `(index of its record, event)` pairs, in arrival order.

    The decoder groups rows by table; cutting the batch at transaction markers and sorting
    each run by position keeps the order a reader expects.
    """
    out: list[tuple[int, dict[str, Any]]] = []
    start = 0
    for index, record in enumerate([*records, None]):
        is_marker = record is not None and record.destination.endswith(".transaction")
        if record is not None and not is_marker:
            continue
        if index > start:
            out.extend(_decode_run(records, start, index, decoder))
        if is_marker and markers and record is not None and record.value is not None:
            out.append((index, _marker(record)))
        start = index + 1
    return out


def _decode_run(
    records: Sequence[RawRecord], start: int, end: int, decoder: Decoder
) -> list[tuple[int, dict[str, Any]]]:
    batch = decoder.decode(records[start:end])
    rows: list[tuple[str, dict[str, Any]]] = []
    for table, changes in batch.changes.items():
        keys = changes.key_columns
        for row in changes.events.to_pylist():
            image = {k: v for k, v in row.items() if not k.startswith("_tm_")}
            op = row[OP]
            event = {
                "op": op,
                "table": table,
                "key": {k: image.get(k) for k in keys},
                "position": row[POSITION],
                "tx": row[TX_ID],
                "ts": row[SOURCE_TS],
                "before": image if op == "d" else row.get(BEFORE),
                "after": None if op == "d" else image,
            }
            if row.get(UNCHANGED_TOAST):
                event["unchanged"] = row[UNCHANGED_TOAST]
            rows.append((row[POSITION], event))
    rows.sort(key=lambda pair: pair[0])
    out = [(end - 1, event) for _, event in rows]
    for letter in batch.dead_letters:
        out.append((end - 1, {"dead_letter": letter.reason, "table": letter.table}))
    return out


def tail_events(
    engines: Sequence[EmbeddedEngine],
    *,
    source_kind: SourceKind = "postgres",
    key_columns: Mapping[str, tuple[str, ...]] | None = None,
    raw: bool = False,
    markers: bool = False,
    max_events: int | None = None,
    idle_timeout: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield events from every engine as they arrive, acknowledging what was yielded.

    Stops after `max_events` change events (markers not counted) or after `idle_timeout`
    seconds without any record. `key_columns` (lake table -> columns) overrides the keys
    Debezium's message keys give (tables keyed by a replica identity index).
    """
    decoders = {id(engine): Decoder(source_kind, dict(key_columns or {})) for engine in engines}
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
            if raw:
                events = [(i, raw_event(r, markers=markers)) for i, r in enumerate(batch)]
            else:
                events = list(decoded_events(batch, decoders[id(engine)], markers=markers))
            for index, event in events:
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

"""Debezium JSON records -> per-table Arrow change batches (DESIGN §3.1).

The envelope schema is parsed once per (destination, schema text) and cached; for the
records after that only the payload is parsed (records come enveloped from Kafka Connect
topics, bare with the schema beside them from the embedded engine). Anything that cannot
be decoded becomes a `DeadLetter`; it never stops the rest of the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import pyarrow as pa

from tidemark.connectors.decode.ddl import (
    DDL_PREFIX,
    HEARTBEAT_MESSAGE_PREFIX,
    MESSAGE_SUFFIX,
    ddl_op,
    message_prefix,
    truncate_op,
)
from tidemark.connectors.decode.position import PositionState, postgres_position, sqlserver_position
from tidemark.connectors.decode.storable import delta_storable
from tidemark.connectors.decode.tables import TableLayout, TableRows
from tidemark.kernel.dead_letter import DeadLetter
from tidemark.kernel.model import TableChanges
from tidemark.kernel.records import RawRecord
from tidemark.kernel.table_ops import TableOp

log = logging.getLogger(__name__)

SourceKind = Literal["postgres", "sqlserver"]
Target = Literal["delta", "arrow"]
HEARTBEAT_PREFIX = "__debezium-heartbeat"
# Heartbeats are counted; Debezium's notifications are the runtime's business (not data).
SKIPPED_PREFIXES = (HEARTBEAT_PREFIX, "__tidemark-notifications")
_SCHEMA_HEAD = '{"schema":'
_PAYLOAD_SEP = ',"payload":'
_HEAD_LEN = len(_SCHEMA_HEAD)
_MAX_OPEN_TX = 10_000  # transactions awaiting their END marker, per source


@dataclass(frozen=True)
class TxMarker:
    """A source transaction's BEGIN or END (`provide.transaction.metadata=true`).

    Attributes:
        status: BEGIN or END; after END every event of `tx_id` has been delivered.
        tx_id: the transaction id as the events' `_tm_tx_id` carries it (Postgres txId,
            SQL Server commit LSN).
        event_count: events in the transaction (END only).
        per_table_counts: lake table name -> events (END only).
        position: the highest event position of the transaction this decoder has seen
            (END only; None when its events were not seen by this decoder).
    """

    status: Literal["BEGIN", "END"]
    tx_id: str
    event_count: int | None
    per_table_counts: dict[str, int]
    position: str | None


@dataclass(frozen=True)
class DecodedBatch:
    """The result of decoding one run of records; see docs/decoding.md.

    `ops` are the table-wide changes (DDL, TRUNCATE) in arrival order, each at its position
    among the `changes` (docs/schema-changes.md).
    """

    changes: dict[str, TableChanges]
    transactions: list[TxMarker]
    dead_letters: list[DeadLetter]
    heartbeats: int
    tombstones: int
    last_position: str | None
    ops: list[TableOp] = field(default_factory=list)


@dataclass
class _Marker:
    """Cache entry for transaction-marker destinations."""


@dataclass
class Decoder:
    """Decodes records of one source kind, remembering schemas and position state.

    Keep one per pipeline (source): the position state makes snapshot positions increase
    across batches. Call `resume_from()` with the last applied position after a restart.
    `target="arrow"` keeps the exact Arrow types of docs/decoding.md; the default `"delta"`
    converts the few a Delta table cannot hold (time, interval, duration, decimal256,
    nanosecond timestamps; `connectors/decode/storable.py`).
    """

    source_kind: SourceKind
    key_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    target: Target = "delta"
    _layouts: dict[tuple[str, str | None], TableLayout | _Marker] = field(default_factory=dict)
    _states: dict[str, PositionState] = field(default_factory=dict)
    _last: dict[str, tuple[str, TableLayout | _Marker]] = field(default_factory=dict)

    def state(self, source: str) -> PositionState:
        """The position state of one source (Debezium `topic.prefix`)."""
        state = self._states.get(source)
        if state is None:
            state = self._states[source] = PositionState()
        return state

    def resume_from(self, source: str, position: str | None, *, epoch: int = 0) -> None:
        """Seed positions after a restart with the highest position already applied, in the
        source's position epoch (`connectors/decode/position.py`)."""
        state = self.state(source)
        state.epoch = epoch
        state.resume_from(position)

    def decode(self, records: Sequence[RawRecord]) -> DecodedBatch:
        """Decode records in arrival order; never raises for a bad record."""
        pending: dict[TableLayout, TableRows] = {}
        markers: list[TxMarker] = []
        dead: list[DeadLetter] = []
        ops: list[TableOp] = []
        heartbeats = tombstones = 0
        for record in records:
            if record.value is None:
                tombstones += 1
                continue
            if record.destination.startswith(SKIPPED_PREFIXES):
                heartbeats += record.destination.startswith(HEARTBEAT_PREFIX)
                continue
            try:
                if record.destination.endswith(MESSAGE_SUFFIX):
                    heartbeats += self._message(record, ops)
                else:
                    self._one(record, pending, markers, ops)
            except Exception as exc:  # a bad record goes to the dead letters, never up
                log.warning("dead letter from %s: %s", record.destination, exc)
                dead.append(self._dead(record, f"{type(exc).__name__}: {exc}"))
        changes, last = self._build(pending, dead)
        if ops:
            top = max(op.position for op in ops)
            last = top if last is None or top > last else last
        return DecodedBatch(changes, markers, dead, heartbeats, tombstones, last, ops)

    def _message(self, record: RawRecord, ops: list[TableOp]) -> int:
        """A logical-decoding message: a DDL op of ours, else a heartbeat (returns 1)."""
        assert record.value is not None
        payload = record.payload()
        if payload.get("op") != "m" or message_prefix(payload) != DDL_PREFIX:
            return int(message_prefix(payload) == HEARTBEAT_MESSAGE_PREFIX)
        source = payload["source"]
        state = self.state(source["name"])
        position = postgres_position(source, "m", state)
        tx = source.get("txId")
        tx_id = None if tx is None else str(tx)
        if tx_id is not None:
            state.tx_last_position[tx_id] = position
        ops.append(
            ddl_op(payload, source=source["name"], position=position, tx_id=tx_id, ts=_ts(source))
        )
        return 0

    # -- one record ----------------------------------------------------------------------
    def _one(
        self,
        record: RawRecord,
        pending: dict[TableLayout, TableRows],
        markers: list[TxMarker],
        ops: list[TableOp],
    ) -> None:
        value = record.value
        assert value is not None
        last = self._last.get(record.destination)
        schema_text = record.value_schema
        if schema_text is not None:  # a bare payload with its schema beside it
            payload = orjson.loads(value)
            if last is not None and last[0] is schema_text:
                layout = last[1]
            else:
                layout = self._cached_layout(record, schema_text, payload)
                self._last[record.destination] = (schema_text, layout)
        # An envelope with the same schema as this destination's last record, checked in
        # place (no copy of the schema text): only the payload is parsed.
        elif (
            last is not None
            and value.startswith(last[0], _HEAD_LEN)
            and value.startswith(_PAYLOAD_SEP, _HEAD_LEN + len(last[0]))
            and value.startswith(_SCHEMA_HEAD)
        ):
            layout = last[1]
            payload = orjson.loads(value[_HEAD_LEN + len(last[0]) + len(_PAYLOAD_SEP) : -1])
        else:
            schema_text, payload = _split(value)
            layout = self._cached_layout(record, schema_text, payload)
            if schema_text is not None and value.startswith(_SCHEMA_HEAD):
                self._last[record.destination] = (schema_text, layout)
        if isinstance(layout, _Marker):
            markers.append(self._marker(record.destination, payload))
            return
        op = payload["op"]
        source = payload["source"]
        row = payload["before"] if op == "d" else payload["after"]
        if row is None and op != "t":
            raise ValueError(f"op `{op}` event without a row image")
        state = self.state(source["name"])
        if self.source_kind == "postgres":
            position = postgres_position(source, op, state)
            tx = source.get("txId")
            tx_id = None if tx is None else str(tx)
        else:
            position = sqlserver_position(source, op, state)
            tx_id = source.get("commit_lsn")
        if op == "r":  # snapshot reads belong to no source transaction (and get no END)
            tx_id = None
        if tx_id is not None:
            open_txs = state.tx_last_position
            open_txs[tx_id] = position
            if len(open_txs) > _MAX_OPEN_TX:  # END markers not coming (metadata off)
                del open_txs[next(iter(open_txs))]
        ts = _ts(source)
        if op == "t":  # TRUNCATE: the whole table, not a row
            ops.append(
                truncate_op(layout.table, layout.key_columns, position=position, tx_id=tx_id, ts=ts)
            )
            return
        rows = pending.get(layout)
        if rows is None:
            rows = pending[layout] = TableRows(layout)
        before = payload.get("before")
        if layout.keyless and op == "u" and before is not None:
            # Every column is the key: the update is the old row leaving, the new arriving.
            row = layout.fill_unchanged(row, before)
            rows.add(before, before, "d", position, tx_id, ts, record)
            position = position[:-8] + f"{int(position[-8:], 16) + 1:08x}"
            op, before = "c", None
            if tx_id is not None:
                state.tx_last_position[tx_id] = position
        rows.add(row, before, op, position, tx_id, ts, record)

    def _cached_layout(
        self, record: RawRecord, schema_text: str | None, payload: dict[str, Any]
    ) -> TableLayout | _Marker:
        cache_key = (record.destination, schema_text)
        layout = self._layouts.get(cache_key)
        if layout is None:
            layout = self._layouts[cache_key] = self._layout(record, schema_text, payload)
        return layout

    def _layout(
        self, record: RawRecord, schema_text: str | None, payload: dict[str, Any]
    ) -> TableLayout | _Marker:
        if "status" in payload and "op" not in payload:
            return _Marker()
        if "op" not in payload:
            raise ValueError("neither a change event nor a transaction marker")
        if schema_text is None:
            raise ValueError(SCHEMALESS)
        source = payload["source"]
        table = f"{source['name']}.{source['schema']}.{source['table']}"
        keys = self.key_columns.get(table)
        if keys is None:
            keys = tuple(_key_fields(record))
        zoned_unit = "us" if self.source_kind == "postgres" else "ns"
        return TableLayout.from_envelope(
            table, orjson.loads(schema_text), tuple(keys), zoned_unit=zoned_unit
        )

    def _marker(self, destination: str, payload: dict[str, Any]) -> TxMarker:
        prefix = destination.rsplit(".", 1)[0]
        raw_id = str(payload["id"])
        tx_id = raw_id.split(":", 1)[0] if self.source_kind == "postgres" else raw_id
        counts: dict[str, int] = {}
        for entry in payload.get("data_collections") or ():
            name = entry["data_collection"]
            if self.source_kind == "sqlserver":  # testDB.dbo.t -> dbo.t
                parts = name.split(".")
                name = f"{parts[1]}.{parts[-1]}" if len(parts) > 2 else name
            counts[f"{prefix}.{name}"] = int(entry["event_count"])
        status = payload["status"]
        position = None
        if status == "END":
            position = self.state(prefix).tx_last_position.pop(tx_id, None)
        return TxMarker(status, tx_id, payload.get("event_count"), counts, position)

    # -- the batch -----------------------------------------------------------------------
    def _build(
        self, pending: dict[TableLayout, TableRows], dead: list[DeadLetter]
    ) -> tuple[dict[str, TableChanges], str | None]:
        tables: dict[str, list[pa.Table]] = {}
        keys: dict[str, tuple[str, ...]] = {}
        finish = delta_storable if self.target == "delta" else None
        for layout, rows in pending.items():
            try:
                built = rows.build(finish)
            except Exception:
                rows, bad = rows.split_bad(finish)
                for record, reason, position in bad:
                    dead.append(self._dead(record, reason, table=layout.table, position=position))
                built = rows.build(finish)
            if built.num_rows:
                tables.setdefault(layout.table, []).append(built)
                keys[layout.table] = layout.key_columns
        changes: dict[str, TableChanges] = {}
        last: str | None = None
        for name, parts in tables.items():
            events = (
                parts[0]
                if len(parts) == 1
                else pa.concat_tables(parts, promote_options="permissive").sort_by("_tm_position")
            )
            changes[name] = TableChanges(name, keys[name], events)
            top = events.column("_tm_position")[-1].as_py()
            last = top if last is None or top > last else last
        return changes, last

    def _dead(
        self,
        record: RawRecord,
        reason: str,
        *,
        table: str | None = None,
        position: str | None = None,
    ) -> DeadLetter:
        raw_key, raw_value = record.enveloped()
        return DeadLetter(
            table=table or _table_from_destination(record.destination, self.source_kind),
            raw_key=raw_key,
            raw_value=raw_value,
            reason=reason.splitlines()[0],
            origin=record.origin or record.destination,
            position=position,
        )


def _ts(source: dict[str, Any]) -> int | None:
    """The commit time in microseconds (`ts_us`, else `ts_ms` x 1000)."""
    ts = source.get("ts_us")
    if ts is None and source.get("ts_ms") is not None:
        ts = source["ts_ms"] * 1000
    return None if ts is None else int(ts)


def _split(value: str) -> tuple[str | None, dict[str, Any]]:
    """Split `{"schema":S,"payload":P}` without parsing S (it is the cache key)."""
    if value.startswith(_SCHEMA_HEAD):
        at = value.find(_PAYLOAD_SEP)
        if at > 0 and value.endswith("}"):
            return value[len(_SCHEMA_HEAD) : at], orjson.loads(value[at + len(_PAYLOAD_SEP) : -1])
    parsed = orjson.loads(value)
    if isinstance(parsed, dict) and "payload" in parsed:
        schema = parsed.get("schema")
        return (None if schema is None else orjson.dumps(schema).decode()), parsed["payload"]
    if isinstance(parsed, dict) and ("op" in parsed or "status" in parsed) and "source" in parsed:
        raise ValueError(SCHEMALESS)
    raise ValueError("not a Debezium JSON envelope (no `payload`)")


SCHEMALESS = (
    "a Debezium event without its schema: the connector's JSON converter has "
    "`value.converter.schemas.enable=false`; set it and `key.converter.schemas.enable` to "
    "true (as `tidemark connectors render` does), then re-register the connector"
)


def _key_fields(record: RawRecord) -> list[str]:
    if record.key is None:
        return []
    if record.key_schema is not None:
        schema = orjson.loads(record.key_schema)
    else:
        schema = orjson.loads(record.key).get("schema") or {}
    return [f["field"] for f in schema.get("fields") or ()]


def _table_from_destination(destination: str, kind: SourceKind) -> str | None:
    parts = destination.split(".")
    if kind == "sqlserver" and len(parts) == 4:
        parts = [parts[0], parts[2], parts[3]]
    return ".".join(parts) if len(parts) == 3 else None


_DEFAULT: dict[SourceKind, Decoder] = {}


def decode_records(
    records: Sequence[RawRecord],
    *,
    source_kind: SourceKind,
    key_columns: Mapping[str, tuple[str, ...]] | None = None,
    target: Target = "delta",
) -> DecodedBatch:
    """Decode with a process-wide `Decoder` per source kind (the contract function).

    Long-running pipelines should hold their own `Decoder` (see its docstring); this
    function keeps one per (source kind, key override, target) so schema caches and
    snapshot counters persist between calls.
    """
    keys = dict(key_columns or {})
    decoder = _DEFAULT.get(source_kind)
    if decoder is None or decoder.key_columns != keys or decoder.target != target:
        decoder = _DEFAULT[source_kind] = Decoder(source_kind, keys, target)
    return decoder.decode(records)

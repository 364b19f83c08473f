"""Decoded change events as JSON-ready dicts (for `tidemark tail`, logs, debugging).

Values keep their exact meaning in JSON: decimals as decimal strings, temporal values as ISO
strings (Postgres +/-infinity as "infinity"/"-infinity"), bytes as base64, intervals as
{months, days, nanoseconds}. Events come in position order; with `markers=True` each
transaction's BEGIN comes before its first event and its END after its last.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tidemark.connectors.decode.decoder import DecodedBatch
from tidemark.kernel import columns as tm

_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_META = (tm.OP, tm.POSITION, tm.TX_ID, tm.SOURCE_TS, tm.BEFORE, tm.UNCHANGED_TOAST)


def decoded_events(batch: DecodedBatch, *, markers: bool = False) -> list[dict[str, Any]]:
    """Every decoded event (and optionally transaction marker) of a batch, as plain dicts."""
    keyed: list[tuple[str, int, dict[str, Any]]] = []
    first_of_tx: dict[str, str] = {}
    for name, changes in batch.changes.items():
        for event in _table_events(name, changes.key_columns, changes.events):
            keyed.append((event["position"], 1, event))
            tx = event["tx"]
            if tx is not None and (tx not in first_of_tx or event["position"] < first_of_tx[tx]):
                first_of_tx[tx] = event["position"]
    if markers:
        for marker in batch.transactions:
            line = {
                "marker": marker.status,
                "tx": marker.tx_id,
                "event_count": marker.event_count,
                "tables": marker.per_table_counts or None,
            }
            if marker.status == "BEGIN":
                keyed.append((first_of_tx.get(marker.tx_id, ""), 0, line))
            else:
                keyed.append((marker.position or first_of_tx.get(marker.tx_id, ""), 2, line))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [line for _, _, line in keyed]


def _table_events(name: str, keys: tuple[str, ...], events: pa.Table) -> Iterator[dict[str, Any]]:
    image = [c for c in events.column_names if c not in _META]
    values = {c: json_values(events.column(c)) for c in image}
    before = (
        json_values(events.column(tm.BEFORE))
        if tm.BEFORE in events.column_names
        else [None] * events.num_rows
    )
    unchanged = (
        events.column(tm.UNCHANGED_TOAST).to_pylist()
        if tm.UNCHANGED_TOAST in events.column_names
        else [None] * events.num_rows
    )
    ops = events.column(tm.OP).to_pylist()
    positions = events.column(tm.POSITION).to_pylist()
    txs = events.column(tm.TX_ID).to_pylist()
    stamps = json_values(events.column(tm.SOURCE_TS))
    for i in range(events.num_rows):
        row = {c: values[c][i] for c in image}
        yield {
            "op": ops[i],
            "table": name,
            "key": {k: row[k] for k in keys},
            "position": positions[i],
            "tx": txs[i],
            "source_ts": stamps[i],
            "before": before[i],
            "after": None if ops[i] == "d" else row,
            "unchanged": unchanged[i],
        }


def json_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """One Arrow column as JSON-safe Python values (see the module docstring)."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        width = pa.int32() if pa.types.is_date32(kind) else pa.int64()
        raw = column.cast(width).to_pylist()
        top = 2**31 - 1 if width == pa.int32() else 2**63 - 1
        bottom = -(2**31) if width == pa.int32() else -(2**63) + 1
        text = _iso(column, raw, top, bottom)
        return [
            None if r is None else "infinity" if r == top else "-infinity" if r == bottom else t
            for r, t in zip(raw, text, strict=True)
        ]
    if pa.types.is_time(kind):
        return column.cast(pa.string()).to_pylist()
    if pa.types.is_decimal(kind):  # fixed notation, scale kept ("0.0000000000", not "0E-10")
        return [None if v is None else format(v, "f") for v in column.to_pylist()]
    if pa.types.is_floating(kind):  # JSON has no NaN/Infinity: spelled as Debezium does
        return [
            v if v is None or math.isfinite(v) else _FLOAT_WORDS[str(v)] for v in column.to_pylist()
        ]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()]
    if kind == pa.month_day_nano_interval():
        return [
            None
            if v is None
            else {"months": v.months, "days": v.days, "nanoseconds": v.nanoseconds}
            for v in column.to_pylist()
        ]
    if pa.types.is_duration(kind):
        return column.cast(pa.int64()).to_pylist()
    if pa.types.is_struct(kind):
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        fields = {kind.field(i).name: json_values(array.field(i)) for i in range(kind.num_fields)}
        valid = array.is_valid().to_pylist()
        return [
            {name: vals[i] for name, vals in fields.items()} if ok else None
            for i, ok in enumerate(valid)
        ]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        flat = json_values(array.flatten())
        offsets = array.offsets.to_pylist()
        valid = array.is_valid().to_pylist()
        return [
            flat[offsets[i] - offsets[0] : offsets[i + 1] - offsets[0]] if valid[i] else None
            for i in range(len(array))
        ]
    return [format(v, "f") if isinstance(v, Decimal) else v for v in column.to_pylist()]


def _iso(
    column: pa.ChunkedArray | pa.Array, raw: list[int | None], top: int, bottom: int
) -> list[str | None]:
    """ISO text; the infinity extremes are masked first (Arrow cannot print them)."""
    mask = pa.array([r is None or r == top or r == bottom for r in raw])
    safe = pc.if_else(mask, pa.scalar(None, type=column.type), column)
    return [
        None if t is None else t.replace(" ", "T", 1) for t in safe.cast(pa.string()).to_pylist()
    ]

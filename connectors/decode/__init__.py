"""Decoding Debezium change events into typed Arrow batches (DESIGN §3.1).

`decode_records` is the contract (DESIGN §3.1); `Decoder` is the same with its state
(schema cache, position counters) held by the caller. docs/decoding.md explains the
type mapping, the position encoding, TOAST placeholders and transaction markers.
"""

from tidemark.connectors.decode.decoder import DecodedBatch, Decoder, TxMarker, decode_records
from tidemark.connectors.decode.jsonl import decoded_events
from tidemark.connectors.decode.settings import TYPE_SETTINGS

__all__ = [
    "TYPE_SETTINGS",
    "DecodedBatch",
    "Decoder",
    "TxMarker",
    "decode_records",
    "decoded_events",
]

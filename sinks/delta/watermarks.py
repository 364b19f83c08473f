"""Where a layer keeps its replay-guard watermarks: in Delta transaction (`txn`) actions.

A watermark is the highest source position one stream (the table, or one Kafka partition of
its topic) has applied to one layer (`tidemark.kernel.replay`). It must outlive everything a
table goes through: Delta keeps exactly one durable value per app id, the `txn` version, in
every commit and checkpoint, for ever; commit metadata (`commitInfo`) is dropped with old log
files, so a stream idle while others commit would lose its watermark there.

A txn version is one signed 64-bit integer and a position is 40-48 hex digits, so a position
is stored as several txn actions beside the stream's own `(app id, batch id)`:
`<app id>#position` holds `2 * length + form` (form 0: lowercase hex, 15 digits per part;
form 1: any other text, its UTF-8 bytes 7 per part), and `<app id>#position.<i>` the parts.
All of them go into the same commit, so they change together.
"""

from __future__ import annotations

import string

from deltalake import DeltaTable, Transaction

from tidemark.sinks.errors import SinkError

_HEX = frozenset(string.hexdigits.lower())
_HEX_PART = 15  # hex digits per part: 60 bits
_BYTE_PART = 7  # bytes per part: 56 bits


def header_app(app_id: str) -> str:
    return f"{app_id}#position"


def position_transactions(app_id: str, position: str) -> list[Transaction]:
    """The txn actions that record `position` as `app_id`'s watermark."""
    if position and set(position) <= _HEX:
        form, length = 0, len(position)
        parts = [int(position[i : i + _HEX_PART], 16) for i in range(0, length, _HEX_PART)]
    else:
        data = position.encode()
        form, length = 1, len(data)
        parts = [
            int.from_bytes(data[i : i + _BYTE_PART], "big") for i in range(0, length, _BYTE_PART)
        ]
    head = Transaction(header_app(app_id), 2 * length + form)
    return [head, *(Transaction(f"{header_app(app_id)}.{i}", part) for i, part in enumerate(parts))]


def read_position(dt: DeltaTable, app_id: str) -> str | None:
    """The watermark `position_transactions` recorded for `app_id`, None if there is none."""
    head = dt.transaction_version(header_app(app_id))
    if head is None:
        return None
    length, form = divmod(head, 2)
    width = _HEX_PART if form == 0 else _BYTE_PART
    sizes = [min(width, length - start) for start in range(0, length, width)]
    if form == 0:
        return "".join(f"{_part(dt, app_id, i):0{size}x}" for i, size in enumerate(sizes))
    data = b"".join(_part(dt, app_id, i).to_bytes(size, "big") for i, size in enumerate(sizes))
    return data.decode()


def _part(dt: DeltaTable, app_id: str, index: int) -> int:
    value = dt.transaction_version(f"{header_app(app_id)}.{index}")
    if value is None:
        raise SinkError(
            f"the watermark of `{app_id}` lacks part {index}",
            hint="the table's log was edited by hand; restore it from a copy",
        )
    return value

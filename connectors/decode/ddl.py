"""Table-wide changes in the change stream: Tidemark's DDL messages and Debezium truncates.

Tidemark's event trigger (connectors/postgres/ddl_capture.sql) writes one transactional
logical-decoding message per change with the prefix `tidemark-ddl`; Debezium delivers it on
`<source>.message` as `{"op": "m", "message": {"prefix", "content" (base64)}}`. A TRUNCATE
arrives as op `t` on the table's own topic (with `skipped.operations=none`). Both become
`TableOp`s at their source position, so the lake applies them between the rows around them.
"""

from __future__ import annotations

import base64
import json
import logging
from decimal import Decimal
from typing import Any

from tidemark.kernel.table_ops import KINDS, TableOp

log = logging.getLogger(__name__)

DDL_PREFIX = "tidemark-ddl"
HEARTBEAT_MESSAGE_PREFIX = "tidemark-heartbeat"
MESSAGE_SUFFIX = ".message"


def message_prefix(payload: dict[str, Any]) -> str | None:
    """The prefix of a logical-decoding message event (None if it is none)."""
    message = payload.get("message")
    return message.get("prefix") if isinstance(message, dict) else None


def ddl_op(
    payload: dict[str, Any], *, source: str, position: str, tx_id: str | None, ts: int | None
) -> TableOp:
    """The `TableOp` of one `tidemark-ddl` message.

    Raises:
        ValueError: the content is not a message our trigger writes (it becomes a dead
            letter with this reason).
    """
    content = payload["message"].get("content")
    if content is None:
        raise ValueError("a tidemark-ddl message without content")
    # Exact decimals: a numeric default of 1.50 must not become the float 1.5.
    body = json.loads(base64.b64decode(content), parse_float=Decimal)
    if not isinstance(body, dict) or body.get("v") != 1 or not isinstance(body.get("op"), dict):
        raise ValueError(f"a tidemark-ddl message of an unknown version `{body.get('v')}`")
    op = dict(body["op"])
    kind = op.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"a tidemark-ddl message of an unknown kind `{kind}`")
    schema, table = op.pop("schema"), op.pop("table")
    op["timezone"] = body.get("timezone")
    return TableOp(
        table=f"{source}.{schema}.{table}",
        kind=kind,
        position=position,
        tx_id=tx_id,
        source_ts=ts,
        details=op,
        ddl=body.get("ddl"),
    )


def truncate_op(
    table: str, keys: tuple[str, ...], *, position: str, tx_id: str | None, ts: int | None
) -> TableOp:
    """A Debezium truncate event (op `t`) of one table (`keys`: its key columns)."""
    return TableOp(table, "truncate", position, tx_id, ts, {"keys": list(keys)}, "TRUNCATE")

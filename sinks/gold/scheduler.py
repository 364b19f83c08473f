"""When gold models refresh: after the batches that touched their inputs, or on an interval.

`on_batch` is called by the runtime between two batches (the embedded runner's `on_batch`
runs before the next batch starts committing), so the input versions it pins there form a
transaction-consistent cut of the lake. The refreshes themselves run on a thread of their
own and never hold up capture: while one runs, later batches only move the pins forward, and
the next refresh covers all of them at once. Every attempt rewrites the model's status file;
a failure also goes to the failure log, and the model's table keeps its last good version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from tidemark.kernel.columns import Layer
from tidemark.kernel.errors import TidemarkError
from tidemark.sinks.gold.model import Input, Model
from tidemark.sinks.gold.refresh import InputMissing, Refreshed, Refresher
from tidemark.sinks.gold.status import read_status, record_failure, write_status
from tidemark.sinks.lake import Lake, TablePin
from tidemark.sinks.views.catalog import Catalog, discover
from tidemark.sinks.views.masking import Masking

log = logging.getLogger(__name__)

Pins = dict[tuple[str, Layer], TablePin]


def _matches(item: Input, table: str) -> bool:
    return item.name == table or item.name == table.rsplit(".", 1)[-1]


class GoldScheduler:
    """Keeps a lake's gold models refreshed.

    Args:
        lake: the pipeline's lake facade (pins are read from it).
        tables: every lake table the pipeline writes (`<source>.<schema>.<table>`).
        models: the models, in dependency order.
        refresh_seconds: per model, None (after each batch touching it) or an interval.
        masking: classified columns, as the views mask them.
        broken: model files that failed to load: name -> error (reported in their status).
    """

    def __init__(
        self,
        lake: Lake,
        *,
        tables: Sequence[str],
        models: Sequence[Model],
        refresh_seconds: Callable[[str], float | None],
        masking: Masking,
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self.lake = lake
        self.tables = list(tables)
        self.models = list(models)
        self.refresh_seconds = refresh_seconds
        self.masking = masking
        self.broken = dict(broken or {})
        self._pins: Pins = {}
        self._batch = 0
        self._due: set[str] = set()
        self._last: dict[str, float] = {}
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._asked = 0  # requests (start, batches) so far
        self._answered = 0  # requests whose refreshes have finished
        self._running = False
        self.refreshes = 0
        self.failures = 0

    # -- called by the runtime ------------------------------------------------------------
    def start(self) -> None:
        """Pin the lake as it is, queue every model once, and start the refresh thread."""
        for name, error in self.broken.items():
            self._write(name, {"status": "failed", "last_error": _error(error, 0)})
        self.on_batch(self.lake.last_batch_id(), self.tables)
        self._thread = threading.Thread(target=self._loop, name="tm-gold", daemon=True)
        self._thread.start()

    def on_batch(self, batch_id: int, touched: Collection[str]) -> None:
        """Between batches: pin every model input, mark the models the batch touched."""
        pins = self.pin()
        with self._wake:
            self._pins, self._batch = pins, batch_id
            self._asked += 1
            for model in self.models:
                if self.refresh_seconds(model.name) is not None and model.name in self._last:
                    continue  # interval models run on their clock
                if any(_matches(i, t) for i in model.inputs for t in touched) or any(
                    i.schema == "gold" and i.name in self._due for i in model.inputs
                ):
                    self._due.add(model.name)
            if not self._due and not self._running:
                self._answered = self._asked  # nothing to do for this batch
            self._wake.notify()

    def pin(self) -> Pins:
        """The current version of every layer of every table (in memory, no I/O once the
        lake's tables are open)."""
        pins: Pins = {}
        for table in self.tables:
            for layer in Layer:
                pin = self.lake.pin(table, layer)
                if pin is not None:
                    pins[(table, layer)] = pin
        return pins

    def close(self, timeout: float = 120.0) -> None:
        """Let a refresh in progress finish (never abandon a write), then stop."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until the refreshes asked for so far (by `start` and `on_batch`) have run
        (tests, the demo; interval refreshes keep going). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wake:
            target = self._asked
            while self._answered < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(min(remaining, 0.2))
        return True

    # -- the refresh thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._due_now():
                    self._wake.wait(self._next_timeout())
                if self._stop:
                    return
                due = self._due_now()
                self._due -= due
                pins, batch, asked = dict(self._pins), self._batch, self._asked
                self._running = True
            try:
                self.refresh(due, pins, batch)
            finally:
                with self._wake:
                    self._running = False
                    # Every request up to `asked` was in this round; with nothing left due,
                    # the later ones (batches that touched no model) are answered too.
                    self._answered = self._asked if not self._due else asked
                    self._wake.notify_all()

    def _due_now(self) -> set[str]:
        now = time.monotonic()
        due = set(self._due)
        for model in self.models:
            every = self.refresh_seconds(model.name)
            if every is not None and now - self._last.get(model.name, -1e18) >= every:
                due.add(model.name)
        return due

    def _next_timeout(self) -> float:
        now = time.monotonic()
        waits = [
            every - (now - self._last.get(m.name, -1e18))
            for m in self.models
            if (every := self.refresh_seconds(m.name)) is not None
        ]
        return max(0.05, min(waits, default=5.0))

    def refresh(self, names: Collection[str], pins: Pins, batch: int) -> list[Refreshed]:
        """Refresh the named models (in dependency order) at `pins`; never raises for a model."""
        catalog = Catalog(
            discover(self.lake.root, storage_options=self.lake.storage_options), self.masking
        )
        refresher = Refresher(self.lake.root, catalog, self.lake.app_id, self.lake.storage_options)
        done = []
        for model in self.models:
            if model.name not in names:
                continue
            self._last[model.name] = time.monotonic()
            started = datetime.now(UTC)
            try:
                result = refresher.refresh(model, pins, batch=batch)
            except InputMissing as exc:
                self._write(model.name, {"status": "waiting", "waiting_for": exc.message}, model)
                continue
            except Exception as exc:  # a model never stops the pipeline
                message = (
                    exc.message
                    if isinstance(exc, TidemarkError)
                    else f"{type(exc).__name__}: {exc}"
                )
                if not isinstance(exc, TidemarkError):
                    log.exception("model %s: unexpected failure", model.name)
                self.failures += 1
                self._write(
                    model.name,
                    {"status": "failed", "last_error": _error(message, batch), "waiting_for": None},
                    model,
                )
                record_failure(
                    self.lake.root,
                    model=model.name,
                    batch_id=batch,
                    error=message,
                    digest=model.digest,
                    storage_options=self.lake.storage_options,
                )
                continue
            self.refreshes += 1
            done.append(result)
            self._write(
                model.name,
                {
                    "status": "ok",
                    "last_error": None,
                    "waiting_for": None,
                    "last_refresh": {
                        "at": started.isoformat(),
                        "batch": result.batch,
                        "mode": result.mode,
                        "rows_written": result.rows,
                        "version": result.version,
                        "seconds": round(result.seconds, 3),
                        "inputs": result.inputs,
                    },
                    "columns": [c.as_dict() for c in result.lineage],
                },
                model,
            )
        return done

    def _write(self, name: str, update: Mapping[str, Any], model: Model | None = None) -> None:
        """Merge `update` into the model's status document (earlier facts are kept)."""
        root, options = self.lake.root, self.lake.storage_options
        document = read_status(root, name, options) or {"model": name, "status": "never"}
        if model is not None:
            every = self.refresh_seconds(name)
            document.update(describe(model, every))
        document.update(update)
        document["updated_at"] = datetime.now(UTC).isoformat()
        write_status(root, name, document, options)


def describe(model: Model, every: float | None) -> dict[str, Any]:
    """A model's static facts, as its status document carries them."""
    return {
        "model": model.name,
        "table": f"gold/{model.name}",
        "sql_file": str(model.path),
        "sql": model.sql,
        "digest": model.digest,
        "inputs": [str(i) for i in model.inputs],
        "mode": model.mode,
        "why_overwrite": model.why_overwrite,
        "keys": list(model.incremental.keys) if model.incremental else [],
        "refresh": "batch" if every is None else f"{every:g}s",
        "incremental": asdict(model.incremental) if model.incremental else None,
    }


def _error(message: str, batch: int) -> dict[str, Any]:
    return {"at": datetime.now(UTC).isoformat(), "batch": batch, "message": message}

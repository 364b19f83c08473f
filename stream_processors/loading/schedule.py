"""Periodic work beside the stream: reference refreshes and watermark polls.

One thread runs every job when it is due, one after another (they share the source
gently, like the loads), until stopped. A job that fails is logged with its reason and
tried again at its next turn; nothing it half did is lost, since every job is safe to
repeat (a reload or a poll reconciles by content: rows the lake holds add nothing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tidemark.kernel.errors import TidemarkError

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Work due every `every` seconds (first at `first`, seconds after the start).

    Attributes:
        runs, failures: how often it ran and failed; `last_error` its last failure.
    """

    name: str
    every: float
    work: Callable[[], object]
    first: float = 0.0
    due: float = 0.0
    runs: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclass
class Scheduler:
    """Runs `jobs` on a thread of its own (`start`, `stop`)."""

    jobs: list[Job]
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        now = time.monotonic()
        for job in self.jobs:
            job.due = now + job.first
        self.thread = threading.Thread(target=self._loop, name="tm-schedule", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the job running now (if any) finishes."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def run_due(self) -> None:
        """Run every job that is due (the loop's step; tests call it directly)."""
        for job in sorted(self.jobs, key=lambda j: j.due):
            if self.stop_event.is_set() or job.due > time.monotonic():
                continue
            try:
                job.work()
                job.last_error = None
            except TidemarkError as exc:
                job.failures += 1
                job.last_error = exc.message
                log.warning("%s failed: %s; trying again in %.0f s", job.name, exc, job.every)
            except Exception as exc:  # a bug: keep the traceback, keep the others running
                job.failures += 1
                job.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s failed; trying again in %.0f s", job.name, job.every)
            job.runs += 1
            job.due = time.monotonic() + job.every

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self.run_due()
            due = min((j.due for j in self.jobs), default=time.monotonic() + 1.0)
            self.stop_event.wait(max(0.05, min(1.0, due - time.monotonic())))

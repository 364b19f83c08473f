"""One batch's commit running beside the loop, so capture and decoding go on meanwhile.

A commit is mostly Parquet encoding and Delta I/O, which run outside the GIL; decoding the
next batch is mostly Python. Overlapping them is where the embedded pipeline's time goes
when every commit rewrites many buckets. Exactly one commit is in flight, so batches still
commit in order and each batch's lookups see the batch before it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

B = TypeVar("B")
R = TypeVar("R")


class InFlight(Generic[B, R]):
    """A slot for one (batch, work) pair run on a thread of its own."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._slot: tuple[B, Future[R]] | None = None

    @property
    def busy(self) -> bool:
        return self._slot is not None

    @property
    def batch(self) -> B | None:
        """The batch in flight, if any."""
        return None if self._slot is None else self._slot[0]

    @property
    def finished(self) -> bool:
        return self._slot is not None and self._slot[1].done()

    def start(self, batch: B, work: Callable[[], R]) -> None:
        if self._slot is not None:
            raise RuntimeError("a commit is already in flight")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidemark-commit")
        self._slot = (batch, self._pool.submit(work))

    def take(self) -> tuple[B, R]:
        """Wait for the work in flight; its batch and result (or its exception, raised)."""
        if self._slot is None:
            raise RuntimeError("no commit in flight")
        batch, future = self._slot
        try:
            return batch, future.result()
        finally:
            self._slot = None

    def abandon(self) -> None:
        """Wait for the work in flight and forget it (the loop is failing anyway)."""
        if self._slot is not None:
            try:
                self.take()
            except Exception:
                log.exception("the commit in flight failed while the loop stopped")

    def close(self) -> None:
        self.abandon()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

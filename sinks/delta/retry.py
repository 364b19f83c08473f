"""One layer's commit loop, shared by every writer: skip a batch the table already holds,
retry a lost commit race with backoff, and time the whole thing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tidemark.kernel.columns import Layer
from tidemark.sinks.base import CommitResult
from tidemark.sinks.delta.table import DeltaHandle
from tidemark.sinks.errors import SinkCommitConflict

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
T = TypeVar("T")


def table_version(handle: DeltaHandle) -> int | None:
    """The handle's Delta version, None before the table exists."""
    return None if handle.dt is None else handle.dt.version()


def commit_with_retries(
    handle: DeltaHandle,
    *,
    layer: Layer,
    batch_id: int,
    attempt: Callable[[], int],
    on_conflict: Callable[[int | None], None] | None = None,
    app_id: str | None = None,
) -> CommitResult:
    """Run `attempt` (which commits and returns the rows written) until it lands.

    A batch at or below the table's txn version of `app_id` (default the handle's) is
    skipped: this very commit landed before (a retry after a failure elsewhere). On
    `SinkCommitConflict` the handle is refreshed, `on_conflict(version before the attempt)`
    lets the writer drop what it cached, and the attempt is retried (6 tries in all).

    Raises:
        SinkCommitConflict: the last attempt still lost the race (transient).
    """
    started = time.perf_counter()
    for number in range(1, MAX_ATTEMPTS + 1):
        if batch_id <= handle.applied_batch(app_id):
            return CommitResult(layer, batch_id, 0, True, table_version(handle), 0.0)
        base = table_version(handle)
        try:
            rows = attempt()
        except SinkCommitConflict:
            if number == MAX_ATTEMPTS:
                raise
            log.warning("conflict on %s, batch %s, attempt %s", handle.uri, batch_id, number)
            handle.refresh()
            if on_conflict is not None:
                on_conflict(base)
            time.sleep(0.05 * 2**number)
            continue
        elapsed = time.perf_counter() - started
        return CommitResult(layer, batch_id, rows, False, table_version(handle), elapsed)
    raise AssertionError("unreachable")


def retry_conflicts(handle: DeltaHandle, attempt: Callable[[], T]) -> T:
    """`attempt()`, again after catching up with the table when another writer won a race
    (bookkeeping tables every worker appends to: the batch log, the dead letters).

    Raises:
        SinkCommitConflict: the last of 6 attempts still lost (transient).
    """
    for number in range(1, MAX_ATTEMPTS + 1):
        try:
            return attempt()
        except SinkCommitConflict:
            if number == MAX_ATTEMPTS:
                raise
            log.warning("conflict on %s, attempt %s", handle.uri, number)
            handle.refresh()
            time.sleep(0.05 * 2**number)
    raise AssertionError("unreachable")

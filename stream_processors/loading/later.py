"""The end-of-load check after the hand-over, on a thread beside the stream.

At start-up the check of a big table costs more than its load (a 2M-row table: 8 s against
4.6 s), and streaming need not wait for it. The check runs on a connection that imported the
load's snapshot while it was still exported, and reads the live layer at the hand-over's
version: the stream writing on meanwhile does not disturb it. The verdict is logged (an
error when the lake differs), handed to `keep` and set on the returned future.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tidemark.stream_processors.loading.spec import Check, TableSpec

log = logging.getLogger(__name__)


def check_later(
    check: Check,
    conn: Any,
    spec: TableSpec,
    version: int | None,
    keep: Callable[[str], None],
) -> Future[Any]:
    """Run `check` on `conn` (closed afterwards) for `spec`'s live layer at `version`."""
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            verdict = check(conn.cursor(), spec, version)
        except BaseException as exc:  # handed to whoever waits on the future
            log.warning("table %s: the end-of-load check failed: %s", spec.table, exc)
            future.set_exception(exc)
            return
        finally:
            conn.close()
        status = str(getattr(verdict, "status", verdict))
        try:
            keep(status)
        except Exception as exc:  # the verdict is logged below all the same
            log.warning("table %s: the check's verdict not recorded: %s", spec.table, exc)
        level = logging.INFO if getattr(verdict, "ok", True) else logging.ERROR
        rows = getattr(verdict, "source_rows", "?")
        log.log(level, "verify_replication %s: %s rows, %s", spec.table, rows, status)
        future.set_result(verdict)

    threading.Thread(target=run, name=f"tm-check-{spec.table}", daemon=True).start()
    return future

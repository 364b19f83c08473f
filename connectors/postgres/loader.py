"""The parallel snapshot reader: a table's ranges copied by a few workers in one snapshot.

Each worker is a thread with its own connection whose transaction imports the load's
exported snapshot (`exported.py`), so every range is read in the same state of the source.
Workers take ranges from a queue, copy each with `COPY ... TO STDOUT` into typed Arrow
(`copyread.py`) and hand every block to the caller (`on_block`), then say the range is
done (`on_range`); the caller writes and commits (stream_processors/loading). Gentle on
the source: `workers` connections at most (default 2), and a rows-per-second cap shared by
all of them. The first failure stops every worker and is raised; ranges already done stay
done (a rerun resumes, docs/loading.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from tidemark.connectors.errors import SourceUnavailable
from tidemark.connectors.postgres.columns import SESSION_SETTINGS
from tidemark.connectors.postgres.copyread import ReadTable, TableReader, session
from tidemark.connectors.postgres.exported import ExportedSnapshot
from tidemark.connectors.postgres.ranges import Range
from tidemark.kernel.secrets import mask

log = logging.getLogger(__name__)


class RateLimit:
    """A rows-per-second cap shared by every worker (a token bucket one second deep)."""

    def __init__(self, rows_per_second: float | None) -> None:
        self.rate = rows_per_second
        self._lock = threading.Lock()
        self._allowance = float(rows_per_second or 0)
        self._at = time.monotonic()

    def take(self, rows: int, stop: threading.Event) -> None:
        """Wait until `rows` more rows are within the cap (at once when there is none)."""
        if not self.rate:
            return
        while not stop.is_set():
            with self._lock:
                now = time.monotonic()
                self._allowance = min(self.rate, self._allowance + (now - self._at) * self.rate)
                self._at = now
                if self._allowance >= min(rows, self.rate):
                    self._allowance -= rows
                    return
                wait = (min(rows, self.rate) - self._allowance) / self.rate
            stop.wait(min(wait, 1.0))


@dataclass
class RangeProgress:
    """How far one range got (read by progress displays from another thread)."""

    index: int
    rows: int = 0
    started: float | None = None
    finished: float | None = None
    worker: int | None = None


@dataclass
class ReadProgress:
    """Rows read per range; thread-safe enough for a display (ints are replaced whole)."""

    ranges: dict[int, RangeProgress] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.ranges.values())

    @property
    def done(self) -> int:
        return sum(1 for r in self.ranges.values() if r.finished is not None)


def worker_connection(dsn: str, snapshot: ExportedSnapshot) -> Any:
    """A connection whose open transaction reads `snapshot`, with the reader's settings.

    Raises:
        SourceUnavailable: the source cannot be reached, or the snapshot is gone.
    """
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
        conn.autocommit = True
        cursor = conn.cursor()
        snapshot.attach(cursor)
        session(cursor, SESSION_SETTINGS)
    except psycopg2.Error as exc:
        raise SourceUnavailable(
            f"a loader connection to `{mask(dsn)}` failed: {str(exc).strip()}",
            hint="check the source; rerun to resume the load where it stopped",
        ) from exc
    return conn


def read_ranges(
    snapshot: ExportedSnapshot,
    reader: TableReader,
    ranges: Sequence[Range],
    *,
    workers: int,
    on_block: Callable[[Range, ReadTable], None],
    on_range: Callable[[Range], None],
    limit: RateLimit | None = None,
    stop: threading.Event | None = None,
    progress: ReadProgress | None = None,
    where: str | None = None,
) -> None:
    """Copy `ranges` of `reader`'s table in `snapshot` with `workers` threads.

    `on_block` and `on_range` run on the workers (several at once: they must be safe for
    that); `where` narrows every range further (a resume reads only rows unchanged since
    the first snapshot).

    Raises:
        SourceUnavailable: a connection failed (rerun to resume).
        Exception: whatever `on_block` or `on_range` raised.
    """
    stop = stop or threading.Event()
    limit = limit or RateLimit(None)
    progress = progress if progress is not None else ReadProgress()
    for item in ranges:
        progress.ranges.setdefault(item.index, RangeProgress(item.index))
    todo: queue.Queue[Range] = queue.Queue()
    for item in ranges:
        todo.put(item)
    failures: list[BaseException] = []
    halt = threading.Event()

    def work(number: int) -> None:
        conn = None
        try:
            while not (halt.is_set() or stop.is_set()):
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                if conn is None:
                    conn = worker_connection(snapshot.dsn, snapshot)
                state = progress.ranges[item.index]
                state.started, state.worker, state.rows = time.monotonic(), number, 0
                predicate = f"({item.where})" + (f" AND ({where})" if where else "")
                for block, _ in reader.read(conn.cursor(), predicate):
                    if halt.is_set() or stop.is_set():
                        break
                    limit.take(block.source_rows, stop)
                    on_block(item, block)
                    state.rows += block.source_rows
                else:
                    on_range(item)
                    state.finished = time.monotonic()
        except psycopg2.Error as exc:
            failures.append(
                SourceUnavailable(
                    f"reading `{reader.table}` failed: {str(exc).strip().splitlines()[0]}",
                    hint="rerun: the load resumes with the ranges it had not finished",
                )
            )
            halt.set()
        except BaseException as exc:  # handed to the caller
            failures.append(exc)
            halt.set()
        finally:
            if conn is not None:
                conn.close()

    threads = [
        threading.Thread(target=work, args=(n,), name=f"tm-load-{n}", daemon=True)
        for n in range(max(1, min(workers, len(ranges))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]

"""What a person sees of loads: live progress (rich), then the `verify_replication` table.

Per table: its phase, rows read of the estimate, rows per second, the time left, and
ranges done; under it the ranges being read, each with its rows and rate. Without a
terminal, one line per table every few seconds. At the end, the seeds' verification table:
table, rows, status.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tidemark.stream_processors.loading.spec import LoadProgress, LoadResult

logger = logging.getLogger(__name__)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def progress_table(loads: list[LoadProgress]) -> Table:
    """The live view of `loads`."""
    table = Table(title="loading", expand=False)
    for name in ("table", "phase", "rows", "rows/s", "ETA", "ranges"):
        table.add_column(name, justify="left" if name in ("table", "phase") else "right")
    now = time.monotonic()
    for load in loads:
        done = load.read.done + load.kept
        total = f"{load.rows:,}" + (f" / ~{load.total_rows:,}" if load.total_rows else "")
        table.add_row(
            load.table,
            load.phase,
            total,
            f"{load.rate:,.0f}",
            _seconds(load.eta),
            f"{done}/{load.ranges}",
        )
        for state in sorted(load.read.ranges.values(), key=lambda r: r.index):
            if state.started is None or state.finished is not None:
                continue
            elapsed = max(now - state.started, 1e-6)
            table.add_row(
                f"  range {state.index}",
                "reading",
                f"{state.rows:,}",
                f"{state.rows / elapsed:,.0f}",
                "",
                "",
            )
    return table


def results_table(results: list[LoadResult]) -> Table:
    """The seeds' `verify_replication` table: table, rows, status."""
    table = Table(title="verify_replication")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("status")
    for result in results:
        check = result.check
        if check is None and result.checking is not None and result.checking.done():
            check = result.checking.exception() or result.checking.result()
        status = "-" if check is None else str(getattr(check, "status", check))
        if check is None and result.checking is not None:
            status = "checking (the verdict goes to the log)"
        rows = result.rows if check is None else getattr(check, "source_rows", result.rows)
        table.add_row(result.table, f"{rows:,}", status)
    return table


class LoadView:
    """Shows the loads started while it is open (`add` is the loads' `progress` callback)."""

    def __init__(self, console: Console | None = None, *, every_s: float = 5.0) -> None:
        self.console = console or Console(stderr=True)
        self.loads: list[LoadProgress] = []
        self.results: list[LoadResult] = []
        self._every = every_s
        self._live: Live | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, load: LoadProgress) -> None:
        self.loads.append(load)

    def done(self, result: LoadResult) -> None:
        self.results.append(result)

    def __enter__(self) -> LoadView:
        if self.console.is_terminal:
            self._live = Live(Group(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self._thread = threading.Thread(target=self._loop, name="tm-load-view", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.25 if self._live else self._every):
            if self._live is not None:
                self._live.update(progress_table(self.loads))
            else:
                for load in self.loads:
                    if load.finished is None and load.started is not None:
                        logger.warning(
                            "loading %s: %s, %d rows, %.0f rows/s, ETA %s",
                            load.table,
                            load.phase,
                            load.rows,
                            load.rate,
                            _seconds(load.eta),
                        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._live is not None:
            self._live.stop()
        if self.results:
            self.console.print(results_table(self.results))

"""Live progress for `tidemark up` (rich), or plain lines when there is no terminal.

Fed from two threads: the runner's `on_batch` and the simulator's `on_progress`; rendered
from the main thread. Rows per table and layer are read from the lake's Delta metadata
every few seconds (cheap: no data files are read).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tidemark.stream_processors.embedded.runner import BatchReport


@dataclass
class ProgressState:
    """What the display shows; updated by the pipeline and simulator threads."""

    started: float = field(default_factory=time.monotonic)
    events: int = 0
    batches: int = 0
    dead_letters: int = 0
    simulated: int = 0
    simulated_rate: float = 0.0
    last: BatchReport | None = None
    lag_s: float | None = None
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    phase: str = "starting"
    _window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_batch(self, report: BatchReport) -> None:
        with self._lock:
            self.events += report.events
            self.batches += 1
            self.dead_letters += report.dead_letters
            self.last = report
            if report.max_source_ts is not None:
                self.lag_s = (report.committed_at - report.max_source_ts).total_seconds()
            self._window.append((time.monotonic(), self.events))

    def on_simulator(self, progress: Any) -> None:
        self.simulated = int(progress.committed)
        self.simulated_rate = float(progress.rate)

    def events_per_s(self, window_s: float = 5.0) -> float:
        """Committed events per second over the last `window_s` seconds."""
        with self._lock:
            now = time.monotonic()
            recent = [(t, n) for t, n in self._window if now - t <= window_s]
            if not recent:
                return 0.0
            first_t, first_n = recent[0]
            if len(recent) == 1:
                return 0.0
            return (recent[-1][1] - first_n) / max(now - first_t, 1e-6)


def render(state: ProgressState) -> Group:
    """The rich view: a summary line, then rows per table and layer, then the last batch."""
    elapsed = time.monotonic() - state.started
    lag = "-" if state.lag_s is None else f"{state.lag_s:.2f} s"
    head = Text.assemble(
        (f"{state.phase}  ", "bold"),
        f"{elapsed:,.0f} s  |  simulator {state.simulated:,} changes "
        f"({state.simulated_rate:,.0f}/s)  |  pipeline {state.events:,} events in "
        f"{state.batches:,} batches ({state.events_per_s():,.0f}/s)  |  lag {lag}  |  "
        f"dead letters {state.dead_letters}",
    )
    table = Table(expand=False)
    for name in ("table", "changelog", "live", "forensic"):
        table.add_column(name, justify="left" if name == "table" else "right")
    for name, rows in sorted(state.rows.items()):
        table.add_row(
            name, *(f"{rows.get(layer, 0):,}" for layer in ("changelog", "live", "forensic"))
        )
    parts: list[Any] = [head, table]
    if state.last is not None:
        last = state.last
        tables = ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in sorted(last.tables.items()))
        parts.append(
            Text(
                f"last batch {last.batch_id}: {last.events} events, {last.transactions} tx, "
                f"closed by {last.closed_by}, committed {last.committed_at:%H:%M:%S} ({tables})"
            )
        )
    return Group(*parts)


def plain_line(state: ProgressState) -> str:
    """One log line for runs without a terminal."""
    lag = "-" if state.lag_s is None else f"{state.lag_s:.2f}s"
    rows = " ".join(
        f"{name.rsplit('.', 1)[-1]}={r.get('live', 0)}" for name, r in sorted(state.rows.items())
    )
    return (
        f"[{datetime.now(UTC):%H:%M:%S}] {state.phase}: simulator {state.simulated} changes, "
        f"pipeline {state.events} events / {state.batches} batches "
        f"({state.events_per_s():.0f}/s), lag {lag}, live rows: {rows or '-'}"
    )


def refresh_rows(state: ProgressState, read: Callable[[], dict[str, dict[str, int]]]) -> None:
    """Re-read rows per table and layer (errors keep the previous figures)."""
    try:
        state.rows = read()
    except Exception:  # a table mid-commit or not created yet: show the last figures
        return

"""Live progress for `tidemark up` (rich), or plain lines when there is no terminal.

Fed from two threads: the runner's `on_batch` and the simulator's `on_progress`; rendered
from the main thread. Per table, the state, rows per layer and freshness against the SLA
come from the status report (`tidemark/observe/`, the same figures as `tidemark status` and
the web page), refreshed every few seconds (cheap: Delta log metadata, no data files).
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

from tidemark.observe.freshness import seconds_text
from tidemark.observe.model import PipelineReport
from tidemark.stream_processors.embedded.reports import BatchReport

LAYERS = ("changelog", "live", "forensic")
_STYLE = {"green": "green", "amber": "yellow", "red": "bold red", "none": "dim"}


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
    report: PipelineReport | None = None
    page: str | None = None  # the status page's address
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

    def set_totals(self, stats: dict[str, dict[str, Any]]) -> None:
        """Totals of the distributed runtime's workers (their stats files, by worker name)."""
        with self._lock:
            self.events = sum(int(s.get("events", 0)) for s in stats.values())
            self.batches = sum(int(s.get("batches", 0)) for s in stats.values())
            self.dead_letters = sum(int(s.get("dead_letters", 0)) for s in stats.values())
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
    for name in ("table", "state", "changelog", "live", "forensic", "freshness (sla)"):
        table.add_column(name, justify="right" if name in LAYERS else "left")
    for t in state.report.sources[0].tables if state.report and state.report.sources else []:
        fresh = Text()
        for layer in t.layers:
            if layer.sla_s is None:
                continue
            fresh.append(
                f"{layer.layer} {seconds_text(layer.freshness_s)} ({seconds_text(layer.sla_s)})  ",
                style=_STYLE[layer.colour],
            )
        table.add_row(t.table, t.state, *(f"{t.rows.get(layer, 0):,}" for layer in LAYERS), fresh)
    parts: list[Any] = [head, table]
    partitions = state.report.sources[0].partitions if state.report and state.report.sources else []
    if partitions:
        lags: dict[str, list[str]] = {}
        for p in partitions:
            lags.setdefault(p.table.rsplit(".", 1)[-1], []).append(f"p{p.partition} {p.lag:,}")
        parts.append(
            Text("consumer lag: " + "  |  ".join(f"{t} {', '.join(v)}" for t, v in lags.items()))
        )
    if state.page:
        parts.insert(0, Text(f"status page: {state.page}", style="bold cyan"))
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
    tables = state.report.sources[0].tables if state.report and state.report.sources else []
    rows = " ".join(f"{t.table.rsplit('.', 1)[-1]}={t.rows.get('live', 0)}" for t in tables)
    breaches = len(state.report.breaches) if state.report else 0
    return (
        f"[{datetime.now(UTC):%H:%M:%S}] {state.phase}: simulator {state.simulated} changes, "
        f"pipeline {state.events} events / {state.batches} batches "
        f"({state.events_per_s():.0f}/s), lag {lag}, live rows: {rows or '-'}, "
        f"sla breaches {breaches}"
    )


def refresh_report(state: ProgressState, read: Callable[[], PipelineReport]) -> None:
    """Re-read the status report (an error keeps the previous figures)."""
    try:
        state.report = read()
    except Exception:  # a table mid-commit or not created yet: show the last figures
        return

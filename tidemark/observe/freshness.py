"""Freshness: how far a lake layer trails its source, and its colour against the SLA.

Definition (docs/observability.md):

    freshness = max(0, T_source - W)

- `T_source` is the commit time of the source's newest transaction: Postgres's
  `pg_last_committed_xact()` (needs `track_commit_timestamp = on`, which Tidemark's local
  cluster sets). Without it, the source's clock (its current time) stands in, which makes an
  idle source look older than it is; without a source at all, Tidemark's clock.
- `W`, the watermark, is the newest instant up to which the layer is known to hold every
  change of the source: the commit time of the newest change the lake applied from that
  source (batches apply every table of a source together, in commit order, so an idle table
  is as complete as the busiest one), or, if later, the last time the running pipeline found
  itself caught up (a caught-up mark: `sinks/progress.py`). A table whose latest changes went
  to the dead letters, or a layer behind its own changelog, is measured by its own newest
  change instead.

So freshness is 0 when the lake holds the source's newest commit, grows while changes wait
(whether the pipeline is slow, stopped or failing), and stops growing while the source is
idle. It is never negative: both times come from the source's clock (statistics round up
to the millisecond; the result is clamped at 0).

Colours: green up to half the SLA, amber up to the SLA, red above it (a breach); `none` when
the layer has no SLA or no data yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

Colour = Literal["green", "amber", "red", "none"]


def reference_time(
    *, latest_commit: datetime | None, source_clock: datetime | None, now: datetime
) -> datetime:
    """`T_source`: the source's newest commit time, else its clock, else ours."""
    return latest_commit or source_clock or now


def watermark(newest_applied: datetime | None, marks: Iterable[datetime | None]) -> datetime | None:
    """`W`: the newest applied change time or, if later, the newest caught-up mark."""
    times = [t for t in (newest_applied, *marks) if t is not None]
    return max(times) if times else None


def freshness(reference: datetime, mark: datetime | None) -> float | None:
    """Seconds `reference` is past the watermark, never negative; None without a watermark."""
    if mark is None:
        return None
    return max(0.0, (reference - mark).total_seconds())


def colour(seconds: float | None, sla: float | None) -> Colour:
    """green (<= half the SLA), amber (<= SLA), red (breached), none (no SLA or no data)."""
    if sla is None or seconds is None:
        return "none"
    if seconds > sla:
        return "red"
    return "amber" if seconds > sla / 2 else "green"


def is_snapshot_position(position: str | None) -> bool:
    """True for the position of a snapshot row (Postgres: commit LSN, then a zero event LSN:
    `connectors/decode/position.py`)."""
    return position is not None and len(position) == 40 and set(position[16:32]) == {"0"}


def seconds_text(value: float | None) -> str:
    """`0.8 s`, `75 s`, `12 min`, `3.1 h`; `-` for None."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f} s"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"

"""What a running pipeline is doing, for `tidemark status`: streaming, or retrying and why.

The embedded runner reports each change of state (a transient failure being retried with
backoff, or running again); `tidemark run` writes it to `<state>/health/<pipeline>.json`
(replaced atomically), and `status` shows it beside the lake's positions.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tidemark.kernel.secrets import mask


@dataclass(frozen=True)
class Health:
    """The last state a pipeline reported.

    Attributes:
        state: `running`, `retrying` or `stopped`.
        error: the failure being retried (one line, password masked), if any.
        retries: retries since the process started.
        since: when this state began (ISO, UTC).
        pid: the process that reported it.
    """

    state: str
    error: str | None
    retries: int
    since: str
    pid: int


def health_path(state: Path, pipeline: str) -> Path:
    return Path(state) / "health" / f"{pipeline}.json"


class HealthFile:
    """Writes one pipeline's health on each change of state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.retries = 0
        self._last: tuple[str, str | None] | None = None

    def report(self, state: str, error: str | None = None) -> None:
        if state == "retrying":
            self.retries += 1
        if self._last == (state, error) and state != "retrying":
            return
        self._last = (state, error)
        health = Health(
            state,
            mask(error.splitlines()[0]) if error else None,
            self.retries,
            datetime.now(UTC).isoformat(timespec="seconds"),
            os.getpid(),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(asdict(health)))
        partial.replace(self.path)


def read_health(path: Path) -> Health | None:
    """The last health written, or None (the pipeline never ran here)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    health = Health(**data)
    if health.state != "stopped" and not _alive(health.pid):
        return Health("stopped", health.error, health.retries, health.since, health.pid)
    return health


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

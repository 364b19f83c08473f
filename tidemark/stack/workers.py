"""`tidemark worker` processes, started and stopped from Python (tests, benchmarks, the stack)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class WorkerProcess:
    """One `tidemark worker` subprocess."""

    process: subprocess.Popen[bytes]
    stats: Path
    log: Path

    def read_stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def kill(self) -> None:
        """kill -9: no shutdown hooks, no final commit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def start_worker(
    config: Path,
    workdir: Path,
    name: str,
    *,
    session_timeout: float = 6.0,
    extra: Sequence[str] = (),
    cwd: Path | None = None,
    module: str = "tidemark",
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """Start `tidemark -v worker --config CONFIG` with its state, stats and log in `workdir`
    (`module`: another entry point to run it with, e.g. a test's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stats, log = workdir / f"{name}.stats.json", workdir / f"{name}.log"
    environment = {**os.environ, **(env or {}), "TIDEMARK_STATE": str(workdir / f"state-{name}")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "-v",
            "worker",
            "--config",
            str(config),
            "--session-timeout",
            str(session_timeout),
            "--stats",
            str(stats),
            *extra,
        ],
        cwd=cwd,
        env=environment,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        # a terminal's Ctrl+C reaches the stack, which drains the workers, then stops them
        start_new_session=True,
    )
    return WorkerProcess(process, stats, log)

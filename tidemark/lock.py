"""One writer per pipeline and per lake: an OS lock that a crash releases.

Two `run`s (or an `up` and a `run`) of one pipeline would share its offsets and its slot,
and two pipelines writing one lake would interleave batch ids; the second is refused with a
message naming the first. The lock is `fcntl.flock` on a file, held as long as the process
lives: the kernel releases it when the holder exits in any way, kill -9 included, so it never
blocks after a crash (a pid file would have to be trusted). The holder writes who it is into
the file for the refusal message. Locked: `<state>/locks/<pipeline>.lock`, and for a local
lake `<lake>/_tidemark/writer.lock` (object stores have no such lock: there the slot, which
one consumer at a time may stream from, is what refuses a second pipeline).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from tidemark.kernel.errors import UsageError

logger = logging.getLogger(__name__)


class AlreadyRunning(UsageError):
    """Another process holds the pipeline's or the lake's lock (exit 2)."""


class _FileLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"{self.what} is in use by {_holder(self.path)}",
                hint="stop that process first (Ctrl+C or SIGTERM); a killed one holds nothing",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_me()).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays for the next one
            self._fd = None


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["tidemark", *sys.argv[1:]])[:200],
    }


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
        f"(`{info.get('command')}`)"
    )


class PipelineLock:
    """Hold the pipeline's lock (and its local lake's) for a `with` block.

    Args:
        state: the state directory (`TIDEMARK_STATE`).
        pipeline: the pipeline name.
        lake: the lake root; a local path is locked too.

    Raises:
        AlreadyRunning: another process holds one of them (message names it).
    """

    def __init__(self, state: Path, pipeline: str, lake: str) -> None:
        self._locks = [
            _FileLock(Path(state) / "locks" / f"{pipeline}.lock", f"pipeline `{pipeline}`")
        ]
        if "://" not in lake:
            root = Path(lake).absolute()
            self._locks.append(_FileLock(root / "_tidemark" / "writer.lock", f"lake `{root}`"))
        self._stack = ExitStack()

    def __enter__(self) -> PipelineLock:
        try:
            for lock in self._locks:
                lock.acquire()
                self._stack.callback(lock.release)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()


def is_running(state: Path, pipeline: str, lake: str) -> str | None:
    """Who holds the pipeline's or lake's lock right now (None when nobody does)."""
    try:
        with PipelineLock(state, pipeline, lake):
            return None
    except AlreadyRunning as exc:
        return exc.message

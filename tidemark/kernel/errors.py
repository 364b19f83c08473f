"""The root of Tidemark's error tree (the kernel: every folder may import it).

Every error a user can cause derives from `TidemarkError`: the CLI prints it as one
line plus a hint and exits 2 (1 is kept for checks that found something). Each class is
marked `Transient` (retrying may succeed: a connection drop, a commit conflict) or
`Terminal` (retrying cannot help: bad config, schema mismatch). Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class TidemarkError(Exception):
    """Base of every error Tidemark raises on purpose.

    Args:
        message: one line: what failed, with the offending value in backticks.
        hint: what the user should do about it.
    """

    exit_code: int = 2  # the command could not do its work; 1 means a check found something

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class TransientError(TidemarkError):
    """Marker: the same operation may succeed if retried later."""


class TerminalError(TidemarkError):
    """Marker: retrying cannot help; a person has to change something."""


class UsageError(TerminalError):
    """A user mistake on the command line or in a file (exit code 2)."""

    exit_code = 2

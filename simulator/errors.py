"""Errors the change simulator raises on purpose.

`SimulatorConfigError` is the user's to fix (bad URL, unknown profile, wrong password) and
exits with code 2. `DatabaseUnavailable` means the database cannot be reached; it is transient
in nature but still exits with code 2 from the CLI, because the user usually pointed us at the
wrong place. `RetryableConflict` never escapes: the engine retries the whole transaction.
"""

from __future__ import annotations

from tidemark.kernel.errors import (
    TerminalError,
    TidemarkError,
    TransientError,
    UsageError,
)


def first_line(exc: BaseException) -> str:
    """The first line of a driver's message (psycopg2 adds context lines after it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SimulatorError(TidemarkError):
    """Base of the simulator's errors."""


class SimulatorConfigError(SimulatorError, UsageError):
    """A wrong option: unknown profile, malformed URL, bad credentials, missing driver."""


class DatabaseRefused(SimulatorError, TerminalError):
    """The database rejected a simulated statement (rights, read-only, disk full...)."""


class DatabaseUnavailable(SimulatorError, TransientError):
    """The database cannot be reached (down, wrong host or port, connection lost)."""

    exit_code = 2


class RetryableConflict(SimulatorError, TransientError):
    """A serialization failure, deadlock or lost foreign-key race: retry the transaction."""

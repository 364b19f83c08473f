"""The sinks' error family, and the one place where `deltalake` errors enter our code.

A commit conflict or an unreachable store is transient (the runtime retries the batch);
a schema mismatch or a bad location is terminal (a person must act).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from deltalake import exceptions as dx

from tidemark.kernel.errors import TerminalError, TidemarkError, TransientError
from tidemark.kernel.secrets import mask


class SinkError(TidemarkError):
    """A lake write or read failed.

    Attributes:
        table: the Delta table URI (password-masked) the error is about, if any.
        batch_id: the batch being written, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        table: str | None = None,
        batch_id: int | None = None,
    ) -> None:
        super().__init__(mask(message), hint=hint)
        self.table = mask(table) if table else None
        self.batch_id = batch_id


class SinkCommitConflict(SinkError, TransientError):
    """Another writer committed to the same files first; retrying the batch will work."""


class SinkUnavailable(SinkError, TransientError):
    """The object store or file system could not be reached."""


class SinkSchemaMismatch(SinkError, TerminalError):
    """The batch cannot be written with the table's schema (e.g. a type that cannot widen)."""


class SinkValueError(SinkError, TerminalError):
    """A value of the batch cannot be written (delta-rs panicked on it, or our own writer
    failed on it): retrying the same batch fails the same way, so its table's events go to
    the dead letters and the other tables go on (DESIGN §3.3, guarantee 7)."""


class SinkLocationError(SinkError, TerminalError):
    """The lake location is wrong (not a Delta table, no permission, bad URL)."""

    exit_code = 2


class SinkLogDamaged(SinkError, TerminalError):
    """A table's Delta log cannot be read (a commit file cut short or corrupted)."""

    exit_code = 2


# How delta-rs reports a commit file it cannot parse (a truncated or corrupted
# `_delta_log/<version>.json`).
_DAMAGED = re.compile(
    r"json error|truncated record|eof while parsing|invalid json|expected value at line|"
    r"unexpected end of|invalid commit|failed to parse (?:log|commit|action)",
    re.I,
)


@contextmanager
def delta_errors(uri: str, *, batch_id: int | None = None) -> Iterator[None]:
    """Translate `deltalake` exceptions raised inside the block into `SinkError`s."""
    try:
        yield
    except SinkError:
        raise
    except (dx.DeltaError, OSError) as exc:
        raise _translate(exc, uri, batch_id) from exc


def damaged(exc: BaseException, uri: str) -> SinkLogDamaged | None:
    """The `SinkLogDamaged` for an exception that reports an unreadable Delta log, else None."""
    found = _translate(exc, uri, None) if isinstance(exc, dx.DeltaError | OSError) else None
    return found if isinstance(found, SinkLogDamaged) else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _translate(exc: BaseException, uri: str, batch_id: int | None) -> SinkError:
    """The `SinkError` for one deltalake (or OS) exception."""
    detail = _one_line(exc).split(" 0: ")[0]  # delta-rs may append a backtrace
    if _DAMAGED.search(detail):
        return SinkLogDamaged(
            f"the Delta log of `{uri}` is damaged: {detail}",
            hint="run `tidemark repair --config FILE`: it restores the table to its last "
            "good version and says what to resync",
            table=uri,
        )
    if isinstance(exc, dx.CommitFailedError):
        return SinkCommitConflict(
            f"commit to `{uri}` lost to a concurrent writer: {detail}",
            hint="retry the batch; it is idempotent",
            table=uri,
            batch_id=batch_id,
        )
    if isinstance(exc, dx.SchemaMismatchError):
        return SinkSchemaMismatch(
            f"batch does not fit the schema of `{uri}`: {detail}",
            hint="see docs/sinks.md, schema evolution",
            table=uri,
            batch_id=batch_id,
        )
    if isinstance(exc, dx.TableNotFoundError):
        return SinkLocationError(
            f"cannot open or create the Delta table at `{uri}`: {detail}",
            hint="check the lake root and its permissions",
            table=uri,
        )
    if "panicked" in detail:
        # A panic inside delta-rs follows from the data (e.g. a date chrono cannot hold), not
        # from the store: retrying would stall the pipeline on it forever.
        return SinkValueError(
            f"delta-rs could not write a value to `{uri}`: {detail}",
            hint="the batch's events of this table go to the dead letters",
            table=uri,
            batch_id=batch_id,
        )
    return SinkUnavailable(
        f"Delta operation on `{uri}` failed: {detail}",
        hint="check the storage location and credentials, then retry",
        table=uri,
        batch_id=batch_id,
    )

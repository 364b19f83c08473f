"""Errors of the distributed runtime."""

from __future__ import annotations

from tidemark.kernel.errors import TerminalError, TidemarkError, TransientError


class WorkerError(TidemarkError):
    """The Faust worker failed."""


class OutputUnavailable(WorkerError, TransientError):
    """A Kafka output (dead-letter or live topic) could not be written; retry later."""


class WorkerConfigError(WorkerError, TerminalError):
    """The pipeline config cannot run distributed (e.g. no `kafka:` section)."""

    exit_code = 2

"""The core's own error: a batch it cannot milestone."""

from __future__ import annotations

from tidemark.kernel.errors import TerminalError


class MilestoningError(TerminalError):
    """A batch the core cannot milestone (missing columns, irreconcilable column types).

    Attributes:
        table: the lake table the batch belongs to.
    """

    def __init__(self, message: str, *, table: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.table = table

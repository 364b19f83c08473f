"""Errors of the wiring layer: the pipeline configuration."""

from __future__ import annotations

from tidemark.kernel.errors import UsageError


class ConfigError(UsageError):
    """The pipeline configuration is invalid; the message names the key path and the fix.

    Attributes:
        key: dotted key path, e.g. `sources[0].tables[2]`.
    """

    def __init__(self, key: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message, hint=hint)
        self.key = key

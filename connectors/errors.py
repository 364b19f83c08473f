"""Errors raised by sources: connections, capture, decoding."""

from __future__ import annotations

from tidemark.kernel.errors import TerminalError, TidemarkError, TransientError


class SourceError(TidemarkError):
    """A source database or the capture engine failed."""


class SourceUnavailable(SourceError, TransientError):
    """The source cannot be reached right now; retrying later may work."""


class SourceConfigError(SourceError, TerminalError):
    """The source is reachable but set up wrongly (rights, replica identity, slot...)."""

    exit_code = 2


class DecodeError(TidemarkError):
    """A change event could not be decoded; it belongs in the dead-letter table."""

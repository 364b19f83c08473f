"""Jinja filters: how the page writes numbers, durations and times (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from tidemark.observe.freshness import seconds_text as seconds


def number(value: float | int | None) -> str:
    """Thousands separated; `-` for None."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def when(value: datetime | None) -> str:
    """`2026-12-06 22:40:38` (UTC); `-` for None."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime | None) -> str:
    """How long ago, e.g. `12 s ago`; `-` for None."""
    if value is None:
        return "-"
    return f"{seconds(max(0.0, (datetime.now(UTC) - value).total_seconds()))} ago"


def register_filters(env: Environment) -> None:
    filters: dict[str, Any] = {"seconds": seconds, "number": number, "when": when, "ago": ago}
    env.filters.update(filters)

"""Value types shared by the configuration models (durations)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from `90`, `90s`, `1.5m`, `10m`, `1h`, `500ms` or `1d`.

    Raises:
        ValueError: the value is not such a duration (pydantic turns it into a key-path error).
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 60s, 10m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError("must be a duration such as 60s, 10m or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("must be a positive duration such as 60s, 10m or 1h")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

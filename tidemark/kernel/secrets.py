"""Keep passwords out of anything printed or logged."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@\s]+)@")
_KV_PASSWORD = re.compile(r"(?i)\b(password|pwd)\s*=\s*[^;\s]+")


def mask(text: str) -> str:
    """Replace the password in URLs (`user:pw@`) and `password=...` pairs with `***`."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}=***", text)

"""Classified columns and how consumers see them: hashed with the lake's key, or dropped.

Columns are tagged in the pipeline config (`classify`, per table: `{email: pii}`); each tag
says what the consumer side does (`hash` or `drop`). Views and gold models read the masked
form; the raw layers keep the clear value unless the tag also asks `raw: drop` (then the
column is never captured: see the wiring).

A hash is `sha256(key || ':' || value)` as lower-case hex, with one random key per lake
(`<lake>/_tidemark/masking.key`, created on first use). The same value hashes alike in every
view and model of a lake, so masked columns still join and group; without the key a
dictionary of likely values cannot be hashed to match. The views file holds the key in its
view definitions: whoever can read that file (or the raw layers) can test guesses, so hand
consumers who must not the gold tables, whose rows hold only the hashes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from tidemark.sinks.views.duck import literal, quote
from tidemark.sinks.views.storage import join, read_text, write_text

Action = Literal["hash", "drop"]
KEY_FILE = ("_tidemark", "masking.key")


@dataclass(frozen=True)
class Masking:
    """Which columns of which lake tables are masked, and how.

    Attributes:
        columns: lake table (`<source>.<schema>.<table>`) -> column -> (tag, action).
        key: the lake's hashing key (hex); needed only when some column hashes.
    """

    columns: Mapping[str, Mapping[str, tuple[str, Action]]] = field(default_factory=dict)
    key: str | None = None

    def of(self, table: str, column: str) -> tuple[str, Action] | None:
        """The (tag, action) of a column, None when it is not classified."""
        return self.columns.get(table, {}).get(column)

    def expression(self, table: str, column: str) -> str | None:
        """The SQL a view selects for `column`: itself, its hash, or None (dropped)."""
        rule = self.of(table, column)
        if rule is None:
            return quote(column)
        if rule[1] == "drop":
            return None
        if self.key is None:
            raise ValueError("a hashed column needs the lake's masking key")
        salted = f"{literal(self.key + ':')} || CAST({quote(column)} AS VARCHAR)"
        return f"sha256({salted})"

    def hashes(self, value: str) -> str:
        """What a view shows for a clear text `value` of a hashed column (tests, audits)."""
        import hashlib

        assert self.key is not None
        return hashlib.sha256(f"{self.key}:{value}".encode()).hexdigest()


def lake_key(root: str, storage_options: Mapping[str, str] | None = None) -> str:
    """The lake's masking key, created (put-if-absent, mode 600) on first use."""
    uri = join(root, *KEY_FILE)
    found = read_text(uri, storage_options)
    if found:
        return found.strip()
    write_text(uri, secrets.token_hex(32) + "\n", storage_options, private=True, exclusive=True)
    again = read_text(uri, storage_options)
    assert again, f"{uri} was just written"
    return again.strip()

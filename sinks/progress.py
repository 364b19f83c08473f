"""Caught-up marks `<lake>/_tidemark/progress/<source>.json`: when the pipeline last held
every change its source had sent.

An idle source brings no batches, so the batch log cannot tell a quiet pipeline from a
stopped one. The embedded runner knows: when a poll brings only heartbeats while nothing is
held or being committed, everything the source committed before them is in the lake. It
then records the time (at most every `min_interval_s` per source), and freshness
(`tidemark/observe/freshness.py`) counts from there instead of from the newest change.

A mark is a small JSON object, replaced whole (a temporary file then a rename on local
disk; one PUT on an object store). It is advisory: losing one costs nothing but an older
watermark, so a failed write is logged, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pyarrow import fs

from tidemark.sinks.delta.table import table_uri

log = logging.getLogger(__name__)

FOLDER = ("_tidemark", "progress")


@dataclass(frozen=True)
class CaughtUp:
    """One source's mark: at `at`, the lake held everything it had sent up to `position`."""

    source: str
    at: datetime
    position: str | None


def filesystem(root: str, storage_options: Mapping[str, str]) -> tuple[fs.FileSystem, str]:
    """A pyarrow filesystem for `root` and the path of `root` in it (S3 from the delta-rs
    storage options: endpoint, keys, region, plain HTTP)."""
    if "://" not in root or root.startswith("file://"):
        return fs.LocalFileSystem(), os.path.abspath(root.removeprefix("file://"))
    parts = urlsplit(root)
    if parts.scheme in ("s3", "s3a"):
        # Built from the options, not `FileSystem.from_uri`, which asks AWS for the bucket's
        # region (a network call to amazonaws.com even for a local S3-compatible server).
        options = dict(storage_options)
        endpoint = options.get("AWS_ENDPOINT_URL")
        filesystem_ = fs.S3FileSystem(
            endpoint_override=endpoint,
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            session_token=options.get("AWS_SESSION_TOKEN"),
            region=options.get("AWS_REGION") or options.get("AWS_DEFAULT_REGION") or "us-east-1",
            scheme="http" if options.get("AWS_ALLOW_HTTP") in ("true", "1") else "https",
        )
        return filesystem_, f"{parts.netloc}{parts.path}".rstrip("/")
    other, path = fs.FileSystem.from_uri(root)
    return other, str(path)


class ProgressMarks:
    """Writes caught-up marks, at most one per source every `min_interval_s`.

    Args:
        root: the lake root.
        storage_options: delta-rs storage options (S3 endpoint and keys).
        min_interval_s: the least time between two marks of one source.
    """

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        min_interval_s: float = 5.0,
    ) -> None:
        self.root = root
        self.storage_options = dict(storage_options or {})
        self.min_interval_s = min_interval_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def caught_up(self, source: str, *, position: str | None = None) -> bool:
        """Record that `source` is caught up now; False when throttled or the write failed."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(source, float("-inf")) < self.min_interval_s:
                return False
            self._last[source] = now
        mark = {"source": source, "at": datetime.now(UTC).isoformat(), "position": position}
        try:
            filesystem_, base = filesystem(self.root, self.storage_options)
            folder = "/".join([base.rstrip("/"), *FOLDER])
            path = f"{folder}/{source}.json"
            body = json.dumps(mark).encode()
            if isinstance(filesystem_, fs.LocalFileSystem):
                os.makedirs(folder, exist_ok=True)
                temporary = f"{path}.{os.getpid()}.tmp"
                with open(temporary, "wb") as out:
                    out.write(body)
                os.replace(temporary, path)
            else:
                with filesystem_.open_output_stream(path) as out:
                    out.write(body)
        except Exception as exc:  # advisory: an older watermark is the only cost
            log.warning("could not record that %s is caught up: %s", source, exc)
            return False
        return True


def read_marks(root: str, storage_options: Mapping[str, str] | None = None) -> list[CaughtUp]:
    """Every source's latest mark (none before the first idle moment)."""
    try:
        filesystem_, base = filesystem(root, dict(storage_options or {}))
        folder = "/".join([base.rstrip("/"), *FOLDER])
        infos = filesystem_.get_file_info(fs.FileSelector(folder, allow_not_found=True))
    except Exception as exc:  # unreachable storage: no marks
        log.debug("no progress marks under %s: %s", table_uri(root, *FOLDER), exc)
        return []
    marks = []
    for info in infos:
        if info.type != fs.FileType.File or not info.base_name.endswith(".json"):
            continue
        try:
            with filesystem_.open_input_stream(info.path) as stream:
                body = json.loads(stream.read())
            marks.append(
                CaughtUp(
                    str(body["source"]), datetime.fromisoformat(body["at"]), body.get("position")
                )
            )
        except Exception as exc:  # half-written by a crashed writer on some stores: skip
            log.debug("unreadable progress mark %s: %s", info.path, exc)
    return marks

"""Worker beacons `<lake>/_tidemark/workers/<worker>.json`: what each distributed worker is
doing, for `tidemark status` (which never talks to the workers).

Each worker replaces its own small JSON object every few seconds (a temporary file then a
rename on local disk; one PUT on an object store): its consumer group, the partitions it
holds, its counters, and its transaction gate (the transaction topics it follows, the END
markers it remembers, the lanes holding records for an END and for how long). A beacon
older than `STALE_S` belongs to a worker that stopped. Advisory, like the caught-up marks
(`sinks/progress.py`): a failed write is logged, never raised.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pyarrow import fs

from tidemark.sinks.progress import filesystem

log = logging.getLogger(__name__)

FOLDER = ("_tidemark", "workers")
STALE_S = 60.0


def write_beacon(
    root: str, name: str, body: Mapping[str, Any], storage_options: Mapping[str, str]
) -> bool:
    """Replace worker `name`'s beacon with `body` (plus `updated_at`); False on failure."""
    data = json.dumps({**body, "worker": name, "updated_at": datetime.now(UTC).isoformat()})
    try:
        filesystem_, base = filesystem(root, storage_options)
        folder = "/".join([base.rstrip("/"), *FOLDER])
        path = f"{folder}/{name}.json"
        if isinstance(filesystem_, fs.LocalFileSystem):
            os.makedirs(folder, exist_ok=True)
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "w") as out:
                out.write(data)
            os.replace(temporary, path)
        else:
            with filesystem_.open_output_stream(path) as stream:
                stream.write(data.encode())
    except Exception as exc:  # advisory: status shows an older beacon
        log.warning("could not write the worker beacon %s: %s", name, exc)
        return False
    return True


def read_beacons(
    root: str, storage_options: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every worker's latest beacon, with `age_s` (seconds since it was written)."""
    try:
        filesystem_, base = filesystem(root, dict(storage_options or {}))
        folder = "/".join([base.rstrip("/"), *FOLDER])
        infos = filesystem_.get_file_info(fs.FileSelector(folder, allow_not_found=True))
    except Exception as exc:  # unreachable storage: no beacons
        log.debug("no worker beacons under %s: %s", root, exc)
        return []
    now = datetime.now(UTC)
    beacons = []
    for info in infos:
        if info.type != fs.FileType.File or not info.base_name.endswith(".json"):
            continue
        try:
            with filesystem_.open_input_stream(info.path) as stream:
                body = json.loads(stream.read())
            body["age_s"] = (now - datetime.fromisoformat(body["updated_at"])).total_seconds()
            beacons.append(body)
        except Exception as exc:  # half-written on some stores: skip
            log.debug("skipping beacon %s: %s", info.path, exc)
    return sorted(beacons, key=lambda b: str(b.get("worker")))

"""A capture process whose JVM heap is too small for the rows (the out-of-memory test).

Run as `python -m tests.narrow_heap_child DSN TABLE STATE HEAP`. It polls slowly, so Debezium
queues records; prints the error it gets as `<class>|<message>|<hint>` and exits 3, or exits 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tidemark.connectors.errors import SourceError
from tidemark.connectors.postgres.capture import open_postgres_engine


def main() -> None:
    dsn, table, state, heap = sys.argv[1:5]
    engine = open_postgres_engine(
        pipeline="narrow",
        source="src",
        dsn=dsn,
        tables=[table],
        state=Path(state),
        heartbeat_ms=500,
        heap=heap,
        extra={"errors.max.retries": "0"},  # Debezium would retry the snapshot 3 times first
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if engine.poll(0.5):
                time.sleep(1)
    except SourceError as exc:
        print(f"{type(exc).__name__}|{exc}|{exc.hint}", flush=True)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()

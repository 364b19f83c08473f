"""A capture process for the kill -9 test: records every delivered row id, then acknowledges.

Run as `python -m tests.capture_child DSN TABLE STATE PIPELINE OUT`. Each batch's ids are
appended to OUT and fsynced before the batch is acknowledged, as a sink would commit first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tidemark.connectors.postgres.capture import open_postgres_engine


def main() -> None:
    dsn, table, state, pipeline, out = sys.argv[1:6]
    engine = open_postgres_engine(
        pipeline=pipeline,
        source="src",
        dsn=dsn,
        tables=[table],
        state=Path(state),
        heartbeat_ms=500,
        max_batch=256,
    )
    print("started", flush=True)
    with open(out, "ab") as sink:
        while True:
            batch = engine.poll(0.5)
            if not batch:
                continue
            ids = [
                str(r.payload()["after"]["id"])
                for r in batch
                if r.value and r.destination.endswith("." + table)
            ]
            if ids:
                sink.write(("\n".join(ids) + "\n").encode())
                sink.flush()
                os.fsync(sink.fileno())
            engine.acknowledge(batch[-1])


if __name__ == "__main__":
    main()

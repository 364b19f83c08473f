"""A deterministic workload for crash tests: `python -m tests.support.crash_writer ROOT N
[MODE [DIE_AT]]`.

Runs batches `last_batch_id()+1 .. N` into the lake at ROOT (as a restarted runtime would)
and touches `ROOT.progress` after each commit, so a test can kill -9 it mid-flight. MODE is
the live/forensic write mode (default copy_on_write); with DIE_AT, a merge-on-read writer
dies (`os._exit`) in batch DIE_AT after writing a DV file and before committing it.
"""

from __future__ import annotations

import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from tests.support.milestones import event, milestone_rows, pos
from tidemark.sinks.lake import Lake

TABLE = "crash.public.items"
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("n", pa.int64())])
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def workload(n_batches: int, *, seed: int = 7, per_batch: int = 1500) -> list[list[dict]]:
    """Ordered events per batch: inserts, updates (recent keys mostly), deletes, re-inserts."""
    rnd = random.Random(seed)
    alive: set[int] = set()
    next_key = 0
    seq = 0
    batches = []
    for _ in range(n_batches):
        events = []
        for _ in range(per_batch):
            seq += 1
            at = EPOCH + timedelta(milliseconds=seq)
            roll = rnd.random()
            if roll < 0.3 or not alive:
                key, op = next_key, "c"
                next_key += 40_000 if rnd.random() < 0.002 else 1  # now and then a new bucket
            elif roll < 0.9:
                key = max(0, next_key - 1 - int(rnd.expovariate(1 / 2000)))
                op = "u" if key in alive else "c"
            else:
                key, op = rnd.choice(sorted(alive)), "d"
            if op == "d":
                alive.discard(key)
            else:
                alive.add(key)
            events.append(
                event(op, pos(seq), at, tx=str(seq // 10), id=key, v=f"v{seq}", n=seq % 7)
            )
        batches.append(events)
    return batches


def run(lake: Lake, batches: list[list[dict]], *, progress: Path | None = None) -> None:
    """Commit every batch after the lake's last one, the way the runtime resumes."""
    for batch_id in range(lake.last_batch_id() + 1, len(batches) + 1):
        events = batches[batch_id - 1]
        keys = pa.table({"id": pa.array(sorted({e["id"] for e in events}), pa.int64())})
        current = lake.current_versions(TABLE, keys)
        mt = milestone_rows(
            TABLE,
            ("id",),
            SCHEMA,
            events,
            current,
            batch_id=batch_id,
            ingested_at=EPOCH + timedelta(hours=batch_id),
        )
        lake.commit_batch(
            batch_id, [mt], source_positions={"src": mt.last_position}, started_at=EPOCH
        )
        if progress is not None:
            progress.write_text(str(batch_id))


def die_before_dv_commit(batch_id: int) -> None:
    """Make this process die between writing a DV file and committing it, in `batch_id`."""
    from tidemark.sinks.delta.dv.commit import DvTable

    commit = DvTable.commit

    def dying(self: DvTable, **kwargs):  # type: ignore[no-untyped-def]
        if batch_id in (kwargs.get("txns") or {}).values() and kwargs.get("deletes"):
            self.before_commit = lambda: os._exit(9)
        return commit(self, **kwargs)

    DvTable.commit = dying  # type: ignore[method-assign]


if __name__ == "__main__":
    root, n = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "copy_on_write"
    if len(sys.argv) > 4:
        die_before_dv_commit(int(sys.argv[4]))
    lake = Lake(root, app_id="crash", write_modes={"*": mode})  # type: ignore[dict-item]
    run(lake, workload(n), progress=Path(root + ".progress"))

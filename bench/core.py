"""Benchmark: milestoning core throughput (events/s) by batch size and key width.

Run from the repo root:  /work/main/.venv/bin/python bench/core.py [--repeat 5]
Prints a table and writes bench/results/core.json. Never asserts timings.

Each batch mixes creates, updates (10% no-ops, 10% with a TOAST placeholder), deletes and
re-inserts over n/4 keys, half of which have an open version in `current`. The baseline is the
obvious per-event Python loop (to_pylist + dict) computing only the live layer, run on the same
events, so the figures can be read side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tidemark.kernel.model import TableChanges
from tidemark.stream_processors.milestoning.core import milestone

T0 = datetime(2026, 1, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")
KEYS = {1: ("id",), 2: ("id", "region"), 3: ("id", "region", "shard")}


def make_batch(n: int, key_width: int, seed: int = 7) -> tuple[TableChanges, pa.Table]:
    rnd = random.Random(seed)
    n_keys = max(1, n // 4)
    regions = ["eu", "us", "ap"]
    cols: dict[str, list] = {
        "id": [],
        "region": [],
        "shard": [],
        "name": [],
        "amount": [],
        "note": [],
        "_tm_op": [],
        "_tm_position": [],
        "_tm_tx_id": [],
        "_tm_source_ts": [],
        "_tm_unchanged": [],
    }
    alive: set[int] = set(range(0, n_keys, 2))  # even keys have an open version in `current`
    last: dict[int, tuple] = {k: (f"name{k}", Decimal(k) / 100, f"note{k}") for k in alive}
    for i in range(n):
        k = rnd.randrange(n_keys)
        unchanged: list[str] = []
        if k not in alive:
            op, values = "c", (f"n{i}", Decimal(i) / 100, f"note {i}")
            alive.add(k)
        else:
            r = rnd.random()
            if r < 0.15:
                op, values = "d", (None, None, None)
                alive.discard(k)
            elif r < 0.25:
                op, values = "u", last[k]  # no-op
            elif r < 0.35:
                op, values = "u", (f"n{i}", Decimal(i) / 100, None)
                unchanged = ["note"]
            else:
                op, values = "u", (f"n{i}", Decimal(i) / 100, last[k][2])
        if op != "d":
            last[k] = values if not unchanged else (values[0], values[1], last[k][2])
        cols["id"].append(k)
        cols["region"].append(regions[k % 3])
        cols["shard"].append(k % 7)
        cols["name"].append(values[0])
        cols["amount"].append(values[1])
        cols["note"].append(values[2])
        cols["_tm_op"].append(op)
        cols["_tm_position"].append(f"{1_000_000 + i:016x}")
        cols["_tm_tx_id"].append(str(i // 3))
        cols["_tm_source_ts"].append(T0 + timedelta(milliseconds=i))
        cols["_tm_unchanged"].append(unchanged)
    types = {
        "id": pa.int64(),
        "region": pa.string(),
        "shard": pa.int32(),
        "name": pa.string(),
        "amount": pa.decimal128(18, 2),
        "note": pa.string(),
        "_tm_op": pa.string(),
        "_tm_position": pa.string(),
        "_tm_tx_id": pa.string(),
        "_tm_source_ts": UTC_US,
        "_tm_unchanged": pa.list_(pa.string()),
    }
    events = pa.table({c: pa.array(v, types[c]) for c, v in cols.items()})
    open_keys = list(range(0, n_keys, 2))
    current = pa.table(
        {
            "id": pa.array(open_keys, pa.int64()),
            "region": pa.array([regions[k % 3] for k in open_keys]),
            "shard": pa.array([k % 7 for k in open_keys], pa.int32()),
            "name": pa.array([f"name{k}" for k in open_keys]),
            "amount": pa.array([Decimal(k) / 100 for k in open_keys], pa.decimal128(18, 2)),
            "note": pa.array([f"note{k}" for k in open_keys]),
            "_tm_valid_from": pa.array([T0 - timedelta(days=1)] * len(open_keys), UTC_US),
            "_tm_position": pa.array([f"{k:016x}" for k in open_keys]),
            "_tm_op": pa.array(["c"] * len(open_keys)),
        }
    )
    return TableChanges("bench.public.t", KEYS[key_width], events), current


def python_baseline(changes: TableChanges) -> int:
    """The naive per-event loop, live layer only: the peer we must beat by a wide margin."""
    live: dict[tuple, dict] = {}
    keys = changes.key_columns
    for row in changes.events.to_pylist():
        key = tuple(row[k] for k in keys)
        if row["_tm_op"] == "d":
            live.pop(key, None)
        else:
            previous = live.get(key, {})
            for name in row["_tm_unchanged"] or ():
                row[name] = previous.get(name)
            live[key] = row
    return len(live)


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (less noisy when the
    machine is shared: time spent waiting for a core does not count)."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="Arrow CPU threads (1 = per core)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "core.json"))
    args = parser.parse_args()
    pa.set_cpu_count(args.threads)
    results = []
    print(
        f"{'events':>8} {'keys':>4} {'core ev/s':>12} {'core ev/cpu-s':>14} "
        f"{'baseline ev/s':>14} {'baseline ev/cpu-s':>18} {'speed-up':>8}"
    )
    for n in (1_000, 10_000, 100_000):
        for width in (1, 3):
            changes, current = make_batch(n, width)
            ingested = datetime.now(UTC)
            core_s, core_cpu = timed(
                lambda c=changes, cur=current, t=ingested: milestone(
                    c, cur, batch_id=1, ingested_at=t
                ),
                args.repeat,
            )
            base_s, base_cpu = timed(lambda c=changes: python_baseline(c), max(1, args.repeat // 2))
            row = {
                "events": n,
                "key_columns": width,
                "core_seconds": round(core_s, 6),
                "core_events_per_s": round(n / core_s),
                "core_events_per_cpu_s": round(n / max(core_cpu, 1e-9)),
                "baseline_events_per_s": round(n / base_s),
                "baseline_events_per_cpu_s": round(n / max(base_cpu, 1e-9)),
            }
            results.append(row)
            print(
                f"{n:>8} {width:>4} {row['core_events_per_s']:>12,} "
                f"{row['core_events_per_cpu_s']:>14,} {row['baseline_events_per_s']:>14,} "
                f"{row['baseline_events_per_cpu_s']:>18,} {base_cpu / max(core_cpu, 1e-9):>7.1f}x"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "milestoning core",
                "when": datetime.now(UTC).isoformat(),
                "python": platform.python_version(),
                "pyarrow": pa.__version__,
                "machine": platform.machine(),
                "arrow_threads": args.threads,
                "load_average": list(os.getloadavg()),
                "note": "shared 2-core box, other jobs running; figures are noisy",
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Sustained committed row changes/s of the simulator into the local Postgres.

For each profile: a fresh database, `setup`, a short unmeasured warm-up with 4 workers (so
tables are not tiny and hot), then a measured run with 1 worker and one with 4 workers.
A third run with 4 workers writes the ledger (one more round trip per transaction).
Prints a table and writes bench/results/simulator.json.

    python bench/simulator.py [--duration 10] [--profiles customers,bank,retail]

Target (issue 2): at least 5,000 changes/s with 4 workers on a 2-core machine that also
runs the Postgres server. The server runs with its defaults (synchronous_commit=on, fsync on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tidemark.connectors.postgres.cluster import LocalCluster  # noqa: E402
from tidemark.simulator import Simulator  # noqa: E402
from tidemark.state import postgres_dir  # noqa: E402


def fresh_database(cluster: LocalCluster, name: str) -> str:
    conn = psycopg2.connect(cluster.url("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return cluster.url(name)


def measure(url: str, profile: str, workers: int, duration: float, ledger: Path | None) -> dict:
    load = os.getloadavg()[0]  # the machine is shared: say how busy it was
    summary = Simulator(
        url, profile=profile, workers=workers, duration=duration, seed=1, ledger=ledger
    ).run()
    return {
        "load_avg_1m_before": round(load, 2),
        "workers": workers,
        "ledger": ledger is not None,
        "seconds": round(summary.elapsed, 2),
        "changes": summary.total,
        "changes_per_s": round(summary.rate),
        "transactions_per_s": round(summary.transactions / summary.elapsed),
        "retries": summary.retries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--profiles", default="customers,bank,retail")
    args = parser.parse_args()

    cluster = LocalCluster(postgres_dir())
    cluster.start()
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-sim-"))
    for profile in args.profiles.split(","):
        url = fresh_database(cluster, f"bench_{profile}")
        Simulator(url, profile=profile).setup()
        Simulator(url, profile=profile, workers=4, duration=args.warmup, seed=0).run()
        for workers, ledger in ((1, None), (4, None), (4, tmp / f"{profile}.jsonl")):
            row = {"profile": profile, **measure(url, profile, workers, args.duration, ledger)}
            results.append(row)
            print(
                f"{profile:<10} workers={workers} ledger={'on ' if ledger else 'off'} "
                f"{row['changes_per_s']:>7,} changes/s  {row['transactions_per_s']:>6,} tx/s  "
                f"retries={row['retries']}  load={row['load_avg_1m_before']}",
                flush=True,
            )
    out = {
        "benchmark": "simulator",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "tx_size": 10,
            "skew": "recent",
            "synchronous_commit": "on",
        },
        "target": "5,000 changes/s with 4 workers",
        "results": results,
    }
    path = ROOT / "bench" / "results" / "simulator.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

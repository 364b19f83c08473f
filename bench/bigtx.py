"""One transaction of N rows against the same N rows as single-row transactions, end to end.

Issue 13, item 6: a transaction bigger than the batch bounds must stream through in bounded
memory; the target is a 1,000,000-row transaction committed within 2x the time of the same
rows as single-row transactions, with peak RSS under 1.5 GB. Side by side in one run, each
workload in a database of its own:
  one     a single `INSERT ... SELECT generate_series` of N rows: one source transaction
  single  the same N rows, one `INSERT` and `COMMIT` each (a procedure)
Per workload: every consumer arms its slot on a 1,000-row table (tidemark snapshots it), the
workload is written while nothing consumes (a backlog), then each consumer drains it in its
own process (bench/e2e.py's children): seconds from its first event to its last commit,
events/s, peak RSS (Python + JVM). Consumers: `tidemark` (the embedded runner into three
Delta layers, default settings) and `capture` (the no-op consumer of decoded events: the
ceiling). For tidemark the lake's batch log gives the batches and the parts.

    python bench/bigtx.py --rows 1000000
Writes bench/results/bigtx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.capture import execute  # noqa: E402
from bench.e2e import spawn  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bigtx.json"
SEED = 1000
WORKLOADS = ("one", "single")
SINGLE = """
CREATE OR REPLACE PROCEDURE bench_single(first bigint, n bigint) LANGUAGE plpgsql AS $$
BEGIN
  FOR g IN first..first + n - 1 LOOP
    INSERT INTO items VALUES (g, g % 1000, (g % 10000) / 100.0, 'single', now());
    COMMIT;
  END LOOP;
END $$;
"""


def write(url: str, workload: str, rows: int) -> float:
    """Write the workload; returns the seconds it took."""
    began = time.monotonic()
    if workload == "one":
        execute(
            url,
            "INSERT INTO items SELECT g, g % 1000, (g % 10000) / 100.0, 'one', now()"
            f" FROM generate_series({SEED + 1}, {SEED + rows}) g",
        )
    else:
        execute(url, SINGLE, f"CALL bench_single({SEED + 1}, {rows})")
    return round(time.monotonic() - began, 1)


def batch_log(lake: Path) -> dict:
    """Batches, parts and the watermark of a drained lake."""
    from deltalake import DeltaTable

    from tidemark.sinks.watermark import watermark_of

    log = DeltaTable(str(lake / "_tidemark" / "batches")).to_pyarrow_table()
    rows = log.to_pylist()
    watermark = watermark_of(log)
    return {
        "batches": len(rows),
        "parts": sum(1 for r in rows if r.get("split_transactions")),
        "watermark_batch": watermark.batch_id if watermark else None,
        "last_batch": max(r["batch_id"] for r in rows),
    }


def run_workload(cluster, root: Path, workload: str, args: argparse.Namespace) -> dict:
    db = f"bigtx_{workload}"
    execute(cluster.url("postgres"), f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}")
    url = cluster.url(db)
    execute(
        url,
        f"ALTER DATABASE {db} SET synchronous_commit = off",
        "CREATE TABLE items (id bigint PRIMARY KEY, account int, amount numeric(12,2),"
        " status text, updated timestamptz)",
        f"INSERT INTO items SELECT g, g % 1000, 1.00, 'seed', now()"
        f" FROM generate_series(1, {SEED}) g",
    )
    consumers = args.consumers.split(",")

    def common(consumer: str, events: int = 0) -> list[str]:
        return [
            *("--url", url, "--state", str(root / f"state-{workload}")),
            *("--pipeline", f"{consumer}_{workload}"),
            *("--lake", str(root / f"lake-{consumer}-{workload}")),
            *("--size", str(SEED), "--events", str(events)),
            *("--max-events", str(args.max_events), "--max-latency-ms", "1000"),
            *("--timeout", str(args.timeout), "--rate", "1000", "--latency-seconds", "0"),
            *("--first-new", "0"),
        ]

    out: dict = {"workload": workload, "rows": args.rows}
    for consumer in consumers:
        print(f"[{workload}] arming {consumer}", flush=True)
        arm = spawn(consumer, "arm", common(consumer), args.timeout, args.logs, tag=workload)
        if "error" in arm:
            out.setdefault("errors", {})[f"arm {consumer}"] = arm["error"]
    print(f"[{workload}] writing {args.rows:,} rows", flush=True)
    out["write_seconds"] = write(url, workload, args.rows)
    for consumer in consumers:
        print(f"[{workload}] draining {consumer}", flush=True)
        drained = spawn(
            consumer, "drain", common(consumer, args.rows), args.timeout, args.logs, tag=workload
        )
        if consumer == "tidemark" and "error" not in drained:
            drained.update(batch_log(root / f"lake-tidemark-{workload}"))
        out[consumer] = drained
        print(f"  {drained}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each workload")
    parser.add_argument(
        "--consumers", default="tidemark,capture", help="any of tidemark, capture, capture_raw"
    )
    parser.add_argument("--max-events", type=int, default=50_000, help="batching.max_events")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--logs", help="a directory for the children's logs")
    parser.add_argument("--out", default=str(RESULTS), help="the JSON report")
    args = parser.parse_args()

    from tidemark.connectors.postgres.cluster import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="tidemark-bench-bigtx-"))
    root.chmod(0o755)
    cluster = LocalCluster(root / "pg")
    cluster.start()
    out: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "command": "python bench/bigtx.py " + " ".join(sys.argv[1:]),
        "options": {"rows": args.rows, "max_events": args.max_events},
        "results": {},
    }
    report = Path(args.out)
    try:
        for workload in WORKLOADS:
            out["results"][workload] = run_workload(cluster, root, workload, args)
            out["machine"][f"load_average_after_{workload}"] = os.getloadavg()
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(out, indent=2) + "\n")
        one = out["results"]["one"].get("tidemark", {})
        single = out["results"]["single"].get("tidemark", {})
        if one.get("seconds") and single.get("seconds"):
            out["one_vs_single_seconds"] = round(one["seconds"] / single["seconds"], 2)
    finally:
        out["machine"]["load_average_at_end"] = os.getloadavg()
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(out, indent=2) + "\n")
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()

"""Distributed runtime benchmark: events/s from Kafka topics to the three Delta layers.

One run, side by side on the same events:
  - baseline: a raw confluent-kafka consumer reading every record (no decode, no lake);
  - the embedded runtime (same decoder, core and sinks) replaying the same records;
  - `tidemark worker` x1 and x2 (one consumer group, a fresh lake each): Faust for the group,
    whole fetches to the agents (`bulk.py`), one Delta commit per layer per batch
    (`group.py`).
Events are real Debezium envelopes: the embedded engine captures churn on a local Postgres
and they are published to a Tansu broker the way Kafka Connect does (murmur2 partitioning).

    .venv/bin/python bench/distributed.py [--events 60000] [--partitions 4]
    .venv/bin/python bench/distributed.py --connect [--events 100000]   # real Kafka Connect

Prints figures and writes bench/results/distributed.json. Never asserts timings.
"""

from __future__ import annotations

import argparse
import decimal
import json
import os
import platform
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import yaml  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from tidemark.connectors.kafka.broker import TansuBroker, create_topics  # noqa: E402
from tidemark.connectors.kafka.produce import publish  # noqa: E402
from tidemark.connectors.postgres.capture import open_postgres_engine  # noqa: E402
from tidemark.connectors.postgres.cluster import LocalCluster  # noqa: E402
from tidemark.stack.workers import start_worker  # noqa: E402

WORK = Path(os.environ.get("BENCH_DIR", "/tmp/dist-bench"))
RESULTS = ROOT / "bench" / "results" / "distributed.json"


def churn(dsn: str, events: int) -> int:
    """Inserts (70%), updates (25%) and deletes (5%) in transactions of 100 rows."""
    made, next_id = 0, 1
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        while made < events:
            ids = list(range(next_id, next_id + 70))
            next_id += 70
            cur.executemany(
                "INSERT INTO items VALUES (%s,%s,%s,%s,%s)",
                [(i, f"item {i}", i % 9, decimal.Decimal(f"{i}.25"), None) for i in ids],
            )
            cur.execute(
                "UPDATE items SET qty = qty + 1, note = 'x' WHERE id = ANY(%s)", (ids[:25],)
            )
            cur.execute("DELETE FROM items WHERE id = ANY(%s)", (ids[25:30],))
            conn.commit()
            made += 100
    return made


def capture(dsn: str, expected: int, state: Path) -> list:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "DROP TABLE IF EXISTS items; CREATE TABLE items (id bigint PRIMARY KEY, "
            "name text, qty int, price numeric(12,2), note text)"
        )
    engine = open_postgres_engine(
        pipeline="bench",
        source="src",
        dsn=dsn,
        tables=["public.items"],
        state=state,
        heartbeat_ms=1000,
    )
    records: list = []
    seen = 0
    started = time.monotonic()
    try:
        # wait for streaming (a heartbeat), then write the churn
        while not any(r.destination.startswith("__debezium-heartbeat") for r in records):
            records.extend(engine.poll(0.5))
        churn(dsn, expected)
        while seen < expected:
            batch = engine.poll(0.5)
            if batch:
                records.extend(batch)
                engine.acknowledge(batch[-1])
                seen += sum(1 for r in batch if r.destination == "src.public.items" and r.value)
            if time.monotonic() - started > 900:
                raise RuntimeError(f"capture stalled at {seen}/{expected}")
    finally:
        engine.close()
    return records


def raw_consume(bootstrap: str, topic: str, partitions: int, total: int) -> float:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-raw", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got, started = 0, time.perf_counter()
    while got < total:
        got += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return total / elapsed


class ReplayEngine:
    """Hands the captured records to the embedded runner as its engine would."""

    def __init__(self, records: list, chunk: int = 4096) -> None:
        self.records, self.chunk, self.at = records, chunk, 0

    def poll(self, timeout: float = 1.0) -> list:
        out = self.records[self.at : self.at + self.chunk]
        self.at += len(out)
        if not out:
            time.sleep(min(timeout, 0.05))
        return out

    @property
    def backlogged(self) -> bool:
        """More records are waiting (the runner batches on while this is true)."""
        return self.at < len(self.records)

    def acknowledge(self, upto) -> int:
        return 0

    def close(self) -> None:
        pass


def run_embedded(
    records: list, *, total: int, root: Path, max_events: int, max_latency_ms: int
) -> dict:
    """The embedded runtime (same decoder, core and sinks) on the same records."""
    import threading

    from tidemark.connectors.decode import Decoder
    from tidemark.sinks.lake import Lake
    from tidemark.stream_processors.embedded.runner import (
        EmbeddedRunner,
        RunnerSettings,
        SourceSpec,
    )

    stop = threading.Event()
    latencies: list[float] = []

    def on_batch(report) -> None:
        latencies.append((report.committed_at - report.started_at).total_seconds())
        if runner.stats.events >= total:
            stop.set()

    engine = ReplayEngine(records)
    runner = EmbeddedRunner(
        [SourceSpec("src", lambda: engine, Decoder("postgres", {}))],
        Lake(str(root), app_id="tidemark:bench-embedded"),
        settings=RunnerSettings(max_events=max_events, max_latency_ms=max_latency_ms),
        on_batch=on_batch,
    )
    started = time.perf_counter()
    runner.run(stop)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "events": runner.stats.events,
        "batches": runner.stats.batches,
        "seconds": round(elapsed, 2),
        "events_per_s": round(total / elapsed),
        "commit_latency_p50_s": round(statistics.median(latencies), 3),
        "commit_latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
    }


def lake_summary(root: Path) -> dict:
    """Row counts per layer, to check every run against the embedded runtime's lake."""
    from deltalake import DeltaTable

    out = {}
    for layer in ("changelog", "live", "forensic"):
        table = DeltaTable(str(root / layer / "src.public.items")).to_pyarrow_table()
        out[layer] = table.num_rows
        if layer == "changelog":
            out["changelog_distinct_positions"] = len(set(table.column("_tm_position").to_pylist()))
    return out


def run_workers(n: int, *, config: Path, total: int, workdir: Path, bucket_by: str) -> dict:
    workers = [
        start_worker(
            config,
            workdir,
            f"w{i}",
            session_timeout=6.0,
            extra=["--bucket-by", bucket_by],
            cwd=ROOT,
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + 900
    try:
        while True:
            stats = [w.read_stats() for w in workers]
            if sum(s.get("events", 0) for s in stats) >= total:
                break
            if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
                raise RuntimeError(
                    "workers did not finish:\n" + "\n".join(w.tail() for w in workers)
                )
            time.sleep(0.5)
    finally:
        for w in workers:
            w.stop()
    latencies = sorted(x for s in stats for x in s["commit_seconds"])
    # from the first record a worker took to the last commit: fetching, batching (including
    # the last partial batch's wait of up to max_latency), decoding, milestoning, commits
    starts = [s["first_fetch"] for s in stats if s.get("first_fetch")]
    end = max(s["last_commit"] for s in stats if s["last_commit"])
    elapsed = end - min(starts)
    return {
        "workers": n,
        "bucket_by": bucket_by,
        "events": sum(s["events"] for s in stats),
        "batches": sum(s["batches"] for s in stats),
        "seconds": round(elapsed, 2),
        "events_per_s": round(total / elapsed),
        # each worker from its own first record to its last commit, summed: what the group
        # sustains once every worker runs (the figure above also counts the group join,
        # during which a second worker's partitions wait)
        "events_per_s_sum_of_workers": round(
            sum(
                s["events"] / (s["last_commit"] - s["first_fetch"])
                for s in stats
                if s.get("first_fetch") and s.get("last_commit")
            )
        ),
        "commit_latency_p50_s": round(statistics.median(latencies), 3),
        "commit_latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
        "per_worker_events": [s["events"] for s in stats],
        "phase_seconds": {
            k: round(sum(s.get("phase_seconds", {}).get(k, 0) for s in stats), 2)
            for k in ("decode", "refresh", "milestone", "commit")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-events", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--max-latency-ms",
        type=int,
        default=500,
        help="batching wait; the last, partial batch of a run waits this long",
    )
    parser.add_argument(
        "--bucket-by",
        default="partition,key",
        help="live/forensic layouts to compare (see docs/distributed.md)",
    )
    parser.add_argument(
        "--connect",
        action="store_true",
        help="real Kafka Connect mode: Postgres -> Connect -> broker -> workers -> Delta, with "
        "Connect's own produce rate and recovery times (bench/distributed_connect.py)",
    )
    parser.add_argument(
        "--sessions", default="6,10", help="--connect: worker session timeouts to measure"
    )
    parser.add_argument("--no-recovery", action="store_true", help="--connect: throughput only")
    parser.add_argument("--out", default=None, help="--connect: where to write the JSON")
    args = parser.parse_args()
    if args.connect:
        from bench.distributed_connect import run

        run(args)
        return
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    WORK.chmod(0o755)
    broker = TansuBroker(WORK / "tansu.log")
    bootstrap = broker.start()
    cluster = LocalCluster(WORK / "pg")
    try:
        dsn = cluster.start()
        topic = "src.public.items"
        create_topics(bootstrap, [topic], partitions=args.partitions)
        create_topics(bootstrap, ["src.transaction"], partitions=1)
        t0 = time.perf_counter()
        records = capture(dsn, args.events, WORK / "state")
        capture_s = time.perf_counter() - t0
        total = sum(1 for r in records if r.destination == topic and r.value)
        published = publish(bootstrap, records)
        print(f"captured {total} change events in {capture_s:.1f}s, published {published}")
        raw = raw_consume(bootstrap, topic, args.partitions, total)
        print(f"baseline raw consume: {raw:,.0f} records/s")
        embedded = run_embedded(
            records,
            total=total,
            root=WORK / "lake-embedded",
            max_events=args.max_events,
            max_latency_ms=args.max_latency_ms,
        )
        expected = lake_summary(WORK / "lake-embedded")
        embedded["lake"] = expected
        print(
            f"embedded runtime, same records: {embedded['events_per_s']:,} events/s; "
            f"batch p50 {embedded['commit_latency_p50_s']}s "
            f"p99 {embedded['commit_latency_p99_s']}s"
        )
        runs = []
        plans = [(b, int(n)) for b in args.bucket_by.split(",") for n in args.workers.split(",")]
        for bucket_by, n in plans:
            tag = f"{bucket_by}-{n}"
            config = WORK / f"pipeline-{tag}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "pipeline": f"bench{n}",
                        "lake": str(WORK / f"lake-{tag}"),
                        "sources": [
                            {
                                "name": "src",
                                "kind": "postgres",
                                "dsn": dsn,
                                "tables": ["public.items"],
                            }
                        ],
                        "batching": {
                            "max_events": args.max_events,
                            "max_latency_ms": args.max_latency_ms,
                        },
                        "kafka": {"bootstrap": bootstrap, "group": f"bench-{tag}"},
                    }
                )
            )
            run = run_workers(
                n, config=config, total=total, workdir=WORK / f"run-{tag}", bucket_by=bucket_by
            )
            run["lake"] = lake_summary(WORK / f"lake-{tag}")
            run["lake_matches_embedded"] = run["lake"] == expected
            runs.append(run)
            print(
                f"{n} worker(s), buckets by {bucket_by}: {run['events_per_s']:,} events/s "
                f"into 3 layers; commit "
                f"p50 {run['commit_latency_p50_s']}s p99 {run['commit_latency_p99_s']}s; "
                f"per worker {run['per_worker_events']}; time in {run['phase_seconds']}; "
                f"lake rows equal the embedded runtime's: {run['lake_matches_embedded']}"
            )
        result = {
            "benchmark": "distributed",
            "at": datetime.now(UTC).isoformat(),
            "command": "python bench/distributed.py " + " ".join(sys.argv[1:]),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg_1m": os.getloadavg()[0],
            },
            "events": total,
            "partitions": args.partitions,
            "max_events": args.max_events,
            "max_latency_ms": args.max_latency_ms,
            "baseline_raw_consume_per_s": round(raw),
            "runs": runs,
            "embedded_runtime_same_records": embedded,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    finally:
        cluster.stop(mode="immediate")
        broker.stop()


if __name__ == "__main__":
    main()

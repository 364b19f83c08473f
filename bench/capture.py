"""Capture throughput: events/s from the embedded Debezium engine to a no-op consumer.

Loads are written while the engine is stopped (so the writer is not the bottleneck), then the
engine is restarted and timed while it drains the slot. Consumers:
  raw      poll + acknowledge, records untouched (the hand-over cost only)
  json     plus orjson.loads of every value (what any decoding must at least pay)
  arrow    plus connectors.decode.Decoder into typed Arrow TableChanges (when it exists)
Also: JVM start time, snapshot rate, peak RSS of the process (Python + JVM).

    python bench/capture.py --rows 1000000 --mixed-tx 20000
Writes bench/results/capture.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tidemark.connectors.debezium.jvm import started_jvm
from tidemark.connectors.postgres.capture import open_postgres_engine
from tidemark.connectors.postgres.cluster import LocalCluster

RESULTS = Path(__file__).parent / "results" / "capture.json"
HEAP = "512m"  # the ceiling is measured with room to spare; the pipeline defaults to less

MIXED_PROCEDURE = """
CREATE OR REPLACE PROCEDURE bench_mixed(n int) LANGUAGE plpgsql AS $$
DECLARE base bigint;
BEGIN
  FOR i IN 1..n LOOP
    base := i * 10;
    INSERT INTO orders (id, customer, amount, status, created)
      SELECT base + g, (base + g) % 997, ((base + g) % 10000) / 100.0, 'new', now()
      FROM generate_series(1, 5) g;
    UPDATE orders SET status = 'paid', amount = amount + 1
      WHERE id IN (base - 9, base - 8, base - 7);
    UPDATE customers SET visits = visits + 1 WHERE id = i % 997;
    DELETE FROM orders WHERE id IN (base - 6);
    COMMIT;
  END LOOP;
END $$;
"""


def decoder():
    """A fresh decoder's `decode`, or None when the decoder is not on this branch."""
    try:
        from tidemark.connectors.decode import Decoder
    except ImportError:
        return None
    return Decoder("postgres").decode


def cpu_seconds() -> float:
    """User + system CPU of this process (Python and the JVM's threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def execute(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def drain(engine, expected: int, consumer: str, tables: set[str], timeout: float) -> dict:
    """Poll until `expected` data change events arrived; returns the timing."""
    decode = decoder() if consumer == "arrow" else None
    cpu_before, python_before = cpu_seconds(), time.thread_time()
    seen = total = 0
    first = None
    deadline = time.monotonic() + timeout
    last_data = time.monotonic()
    while seen < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {seen}/{expected} events")
        batch = engine.poll(1.0)
        if first is not None and time.monotonic() - last_data > 30:
            print(f"  no new events for 30 s: stopping at {seen}/{expected}", flush=True)
            break
        if not batch:
            continue
        last_data = time.monotonic()
        if first is None:
            first = time.perf_counter()
        total += len(batch)
        seen += sum(1 for r in batch if r.destination in tables)
        if consumer == "json":
            for record in batch:
                if record.value is not None:
                    orjson.loads(record.value)
        elif consumer == "arrow" and decode is not None:
            decoded = decode(batch)
            if decoded.dead_letters:
                raise SystemExit(f"dead letters: {decoded.dead_letters[0].reason}")
        engine.acknowledge(batch[-1])
    elapsed = time.perf_counter() - (first or time.perf_counter())
    cpu = cpu_seconds() - cpu_before
    python_cpu = time.thread_time() - python_before
    if seen < expected:
        elapsed -= 30  # the idle wait at the end
    return {
        "complete": seen >= expected,
        "process_cpu_seconds": round(cpu, 2),
        "cpu_us_per_event": round(cpu / seen * 1e6) if seen else None,
        # the consuming thread: split, RawRecords, decoding, acknowledge (JVM threads excluded)
        "consumer_thread_cpu_us_per_event": round(python_cpu / seen * 1e6) if seen else None,
        "events": seen,
        "records": total,
        "seconds": round(elapsed, 3),
        "events_per_s": round(seen / elapsed) if elapsed else None,
        "records_per_s": round(total / elapsed) if elapsed else None,
    }


def wait_streaming(engine, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = engine.poll(0.5)
        if batch:
            engine.acknowledge(batch[-1])
            if any(r.destination.startswith("__debezium-heartbeat") for r in batch):
                return
    raise SystemExit("engine never reached streaming")


def run_load(
    url: str,
    state: Path,
    name: str,
    tables: list[str],
    load: Callable[[], int],
    consumers: list[str],
    heap: str,
    timeout: float,
) -> dict:
    """Arm a slot, write the load with the engine stopped, then drain it once per consumer.

    `load()` writes the changes and returns how many change events they make.
    """
    results: dict = {}
    for consumer in consumers:
        if consumer == "arrow" and decoder() is None:
            results[consumer] = "skipped: connectors.decode.decode_records not on this branch"
            continue
        pipeline = f"{name}_{consumer}"
        engine = open_postgres_engine(
            pipeline=pipeline,
            source="b",
            dsn=url,
            tables=tables,
            state=state,
            heap=heap,
            heartbeat_ms=500,
        )
        wait_streaming(engine)
        engine.close()
        results.setdefault("_armed", []).append(pipeline)
    began = time.perf_counter()
    expected = results["expected_events"] = load()
    results["load_seconds"] = round(time.perf_counter() - began, 2)
    for consumer in consumers:
        if isinstance(results.get(consumer), str):
            continue
        engine = open_postgres_engine(
            pipeline=f"{name}_{consumer}",
            source="b",
            dsn=url,
            tables=tables,
            state=state,
            heap=heap,
            heartbeat_ms=500,
        )
        try:
            topics = {f"b.{t}" for t in tables}
            results[consumer] = drain(engine, expected, consumer, topics, timeout)
        finally:
            engine.close()
        print(f"  {name:7s} {consumer:6s} {results[consumer]}", flush=True)
    results.pop("_armed", None)
    return results


def simulator_load(
    cluster: LocalCluster, state: Path, args: argparse.Namespace, consumers: list[str]
) -> dict:
    """The simulator's mixed OLTP load (profile `customers`, own database), if it exists."""
    try:
        from tidemark.simulator.runner import Simulator
    except ImportError:
        return {"skipped": "simulator not on this branch"}
    execute(cluster.url("postgres"), "CREATE DATABASE sim")
    url = cluster.url("sim")
    sim = Simulator(url, profile="customers", max_changes=args.simulator_changes, seed=7, workers=2)
    sim.setup()
    tables = [f"public.{table.name}" for table in sim.profile.tables]
    print(f"simulator load: {args.simulator_changes} changes on {tables}", flush=True)

    def load() -> int:
        summary = sim.run()
        return summary.total

    result = run_load(url, state, "sim", tables, load, consumers, args.heap, args.timeout)
    result["load"] = "simulator profile customers, 2 workers, default mix and tx size"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the insert load")
    parser.add_argument(
        "--mixed-tx",
        type=int,
        default=20_000,
        help="transactions in the mixed load (10 events each)",
    )
    parser.add_argument("--snapshot-rows", type=int, default=200_000)
    parser.add_argument(
        "--simulator-changes",
        type=int,
        default=100_000,
        help="changes from the simulator's mixed load (0: skip)",
    )
    parser.add_argument("--consumers", default="raw,json,arrow")
    parser.add_argument("--heap", default=HEAP)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON goes")
    args = parser.parse_args()
    consumers = args.consumers.split(",")

    root = Path(tempfile.mkdtemp(prefix="tidemark-bench-capture-"))
    root.chmod(0o755)
    cluster = LocalCluster(root / "pg")
    url = cluster.start()
    state = root / "state"
    out: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "debezium_patch": os.environ.get("TIDEMARK_DEBEZIUM_PATCH", "1") != "0",
        "options": vars(args),
    }
    try:
        execute(
            url,
            "CREATE TABLE rows_in (id bigint PRIMARY KEY, name text, amount numeric(12,2),"
            " created timestamptz, flag boolean)",
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer int, amount numeric(12,2),"
            " status text, created timestamptz)",
            "CREATE TABLE customers (id int PRIMARY KEY, name text, visits int)",
            "INSERT INTO customers SELECT g, 'c' || g, 0 FROM generate_series(0, 996) g",
            "CREATE TABLE snap (id bigint PRIMARY KEY, name text, amount numeric(12,2),"
            " created timestamptz)",
            f"INSERT INTO snap SELECT g, 'name ' || g, g / 100.0, now()"
            f" FROM generate_series(1, {args.snapshot_rows}) g",
            MIXED_PROCEDURE,
        )
        print(f"insert load: {args.rows} rows", flush=True)
        inserts = [
            f"INSERT INTO rows_in SELECT g, 'name ' || g, (g % 100000) / 100.0, now(), g % 2 = 0"
            f" FROM generate_series({s}, {s + 9999}) g"
            for s in range(1, args.rows + 1, 10_000)
        ]
        out["insert"] = run_load(
            url,
            state,
            "insert",
            ["public.rows_in"],
            lambda: execute(url, *inserts) or args.rows,
            consumers,
            args.heap,
            args.timeout,
        )
        jvm = started_jvm()
        out["jvm"] = (
            {
                "start_seconds": round(jvm.start_seconds, 3),
                "version": jvm.runtime.version,
                "source": jvm.runtime.source,
                "heap": jvm.heap,
            }
            if jvm
            else None
        )
        if args.mixed_tx > 0:
            print(f"mixed load: {args.mixed_tx} transactions", flush=True)
            out["mixed"] = mixed_load(url, state, args, consumers)
        if args.simulator_changes:
            out["simulator"] = simulator_load(cluster, state, args, consumers)
        if args.snapshot_rows > 0:
            out["snapshot"] = snapshot_load(url, state, args)
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    results = Path(args.out)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def mixed_load(url: str, state: Path, args: argparse.Namespace, consumers: list[str]) -> dict:
    """The SQL procedure's mixed load on orders and customers."""
    result = run_load(
        url,
        state,
        "mixed",
        ["public.orders", "public.customers"],
        # tx 1 has no earlier rows to update or delete: 4 events fewer
        lambda: execute(url, f"CALL bench_mixed({args.mixed_tx})") or args.mixed_tx * 10 - 4,
        consumers,
        args.heap,
        args.timeout,
    )
    result["load"] = "SQL procedure: per tx 5 inserts, 3+1 updates, 1 delete"
    return result


def snapshot_load(url: str, state: Path, args: argparse.Namespace) -> dict:
    """The initial snapshot of `snap` (op r), raw records."""
    print(f"snapshot: {args.snapshot_rows} rows", flush=True)
    engine = open_postgres_engine(
        pipeline="snapshot",
        source="b",
        dsn=url,
        tables=["public.snap"],
        state=state,
        heap=args.heap,
    )
    try:
        result = drain(engine, args.snapshot_rows, "raw", {"b.public.snap"}, args.timeout)
    finally:
        engine.close()
    print(f"  snapshot raw {result}", flush=True)
    return result


if __name__ == "__main__":
    main()

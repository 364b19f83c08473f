"""End to end: simulator-style OLTP load -> Postgres -> pipeline -> Delta, with baselines.

Per live-table size (`--sizes`, default 100k; 1M and 10M take long on 2 cores):
  1. a table of N rows; each consumer arms its own slot (tidemark and dlt snapshot the N rows
     into their lakes first, so their live tables hold N rows; the capture ceiling skips it);
  2. per key distribution (`--keys`), one backlog of E events is written (transactions of
     10: 8 updates, one insert, one delete), the same events for every consumer. `recent`:
     updates hit keys an exponential distance (mean 1,000) back from the newest row, the
     simulator's default skew (real OLTP); `uniform`: keys spread over the whole table, the
     worst case for any copy-on-write lake (every batch touches every file);
  3. each consumer drains that backlog in its own process (so its peak RSS is its own):
       capture   bench/capture.py's no-op consumer of events decoded into Arrow: the capture
                 issue's benchmark, "the ceiling the whole pipeline is measured against"
       tidemark  the embedded runner: decode, batch, milestone, commit 3 Delta layers
       tidemark_mor  the same with live and forensic in merge-on-read (deletion vectors)
       dlt       the same embedded engine feeding dlt, Delta destination, merge disposition
     and reports sustained events/s from its first event to its last commit; with
     `--rounds N`, N backlogs in turn, each drained in a rotated consumer order, and the
     ratios are the rounds' medians (a machine that slows during a run hits each consumer);
  4. latency: tidemark (and tidemark_mor) runs while a writer commits a steady 1,000
     events/s for `--latency-seconds`; p50/p99 of (lake commit time - source commit time).
Each drain records the load average when it started (the machine is shared).

    python bench/e2e.py --sizes 100000,1000000 --events 300000
Writes bench/results/e2e.json and bench/results/e2e.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.capture import HEAP as CEILING_HEAP  # noqa: E402
from bench.capture import execute  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CONSUMERS = ("capture", "tidemark", "tidemark_mor", "dlt")
# on request only: the capture consumer without decoding (how much of the ceiling is decode)
REFERENCE = ("capture_raw",)
TABLE = "public.items"

PROCEDURE = """
CREATE TABLE IF NOT EXISTS bench_backlogs (keys text, events bigint);
CREATE OR REPLACE PROCEDURE bench_backlog(n int, size bigint, first_new bigint, keys text)
LANGUAGE plpgsql AS $$
DECLARE k bigint; c bigint; total bigint := 0;
BEGIN
  FOR i IN 1..n LOOP
    IF keys = 'uniform' THEN
      -- 8 keys spread over the whole table (7919 is prime)
      UPDATE items SET amount = amount + 1, status = 's' || i, updated = now()
        WHERE id IN (SELECT 1 + ((i::bigint * 8 + j) * 7919) % size FROM generate_series(1, 8) j);
    ELSE
      -- the simulator's `recent` skew: an exponential distance (mean 1,000) back from the
      -- newest preloaded row, from a fixed hash so every run writes the same events
      UPDATE items SET amount = amount + 1, status = 's' || i, updated = now()
        WHERE id IN (SELECT greatest(1, size - floor(-ln(
          (((i::bigint * 8 + j) * 2654435761) % 1000003 + 1) / 1000004.0) * 1000)::bigint)
          FROM generate_series(1, 8) j);
    END IF;
    GET DIAGNOSTICS c = ROW_COUNT;
    k := first_new + i;
    INSERT INTO items VALUES (k, k % 1000, 1.00, 'new', now());
    DELETE FROM items WHERE id = k - 1 AND k - 1 > first_new;
    total := total + c + 1 + (CASE WHEN k - 1 > first_new THEN 1 ELSE 0 END);
    COMMIT;
  END LOOP;
  INSERT INTO bench_backlogs VALUES (keys, total);
  COMMIT;
END $$;
"""


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# -- children: one consumer per process ---------------------------------------------------------
def child(args: argparse.Namespace) -> dict:
    if args.consumer.startswith("capture"):
        return capture_child(args)
    if args.consumer.startswith("tidemark"):
        return tidemark_child(args)
    return dlt_child(args)


def _engine(args: argparse.Namespace, *, snapshot: bool, extra: dict | None = None):
    """The engine of the ceiling and the peer, with `bench/capture.py`'s heap (the capture
    issue's benchmark): a smaller one lowers the ceiling. Tidemark runs with its default."""
    from tidemark.connectors.postgres.capture import open_postgres_engine

    props = {"snapshot.mode": "initial" if snapshot else "no_data", **(extra or {})}
    return open_postgres_engine(
        pipeline=args.pipeline,
        source="b",
        dsn=args.url,
        tables=[TABLE],
        state=Path(args.state),
        heartbeat_ms=500,
        extra=props,
        signals=False,
        heap=CEILING_HEAP,
    )


def capture_child(args: argparse.Namespace) -> dict:
    from bench.capture import drain, wait_streaming

    engine = _engine(args, snapshot=False)
    try:
        if args.phase == "arm":
            wait_streaming(engine)
            return {}
        decoded = "raw" if args.consumer == "capture_raw" else "arrow"
        result = drain(engine, args.events, decoded, {f"b.{TABLE}"}, args.timeout)
    finally:
        engine.close()
    return {**result, "peak_rss_mb": peak_rss_mb()}


def _tidemark_config(args: argparse.Namespace):
    from tidemark.config import parse_config

    return parse_config(
        {
            "pipeline": args.pipeline,
            "lake": args.lake,
            "sources": [{"name": "b", "kind": "postgres", "dsn": args.url, "tables": [TABLE]}],
            "batching": {"max_events": args.max_events, "max_latency_ms": args.max_latency_ms},
            "debezium": {"heartbeat_ms": 500},
            **({"lake_cache_mb": args.lake_cache_mb} if args.lake_cache_mb is not None else {}),
            **({"write_mode": {"*": "merge_on_read"}} if args.consumer == "tidemark_mor" else {}),
        }
    )


def tidemark_child(args: argparse.Namespace) -> dict:
    from tidemark.pipeline import build_runner, run_until

    config = _tidemark_config(args)
    done = threading.Event()
    stop = threading.Event()
    seen = {"events": 0, "first": None, "last": None}
    latencies: list[float] = []
    writing = {"since": float("inf")}
    target = args.size if args.phase == "arm" else args.events

    def on_batch(report) -> None:
        seen["events"] += report.events
        seen["last"] = time.perf_counter()
        if args.phase == "latency" and report.source_ts is not None:
            committed = report.committed_at.timestamp()
            latencies.extend(
                committed - ts.timestamp()
                for ts in report.source_ts.to_pylist()
                if ts.timestamp() >= writing["since"]  # not another consumer's old events
            )
        if seen["events"] >= target and args.phase != "latency":
            done.set()

    runner, lake = build_runner(
        config, state=Path(args.state), on_batch=on_batch, keep_source_ts=args.phase == "latency"
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_until(runner, stop)
        except BaseException as exc:
            failure.append(exc)
            done.set()
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if args.phase == "latency":
        while not runner.heartbeats:
            time.sleep(0.1)
        # The slot may hold events another consumer's latency run wrote: drain them first
        # (no batch for 10 s), and time only the events written from now on.
        quiet_since, last_seen = time.monotonic(), seen["events"]
        while time.monotonic() - quiet_since < 10:
            time.sleep(0.2)
            if seen["events"] != last_seen:
                quiet_since, last_seen = time.monotonic(), seen["events"]
        seen["events"] = 0
        writing["since"] = time.time()
        written = steady_writer(
            args.url, rate=args.rate, seconds=args.latency_seconds, first_new=args.first_new
        )
        deadline = time.monotonic() + 60
        while seen["events"] < written and time.monotonic() < deadline:
            time.sleep(0.2)
    elif args.phase == "arm":
        # The loader arms the table inside `build_runner` (no batch reports its rows); a
        # Debezium snapshot (`snapshot: debezium`) reports them batch by batch.
        from tidemark.sinks.readers import count_rows

        while not done.is_set() and not runner.heartbeats:
            done.wait(0.1)
        seen["events"] = max(seen["events"], count_rows(f"{args.lake}/live/b.{TABLE}"))
        while not done.is_set() and seen["events"] < target:
            done.wait(0.1)
    else:
        while not done.is_set():
            if seen["first"] is None and (runner.pending_events or seen["events"]):
                seen["first"] = time.perf_counter()
            done.wait(0.05)
    stop.set()
    thread.join(120)
    lake.close()
    if failure:
        raise SystemExit(f"tidemark failed: {failure[0]!r}")
    import pyarrow as pa

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime  # the whole process: JVM, decode, sinks
    out = {
        "events": seen["events"],
        "process_cpu_seconds": round(cpu, 1),
        "cpu_us_per_event": round(cpu * 1e6 / max(seen["events"], 1)),
        "peak_rss_mb": peak_rss_mb(),
        "arrow_peak_mb": round(pa.default_memory_pool().max_memory() / 2**20),
        "arrow_pool": pa.default_memory_pool().backend_name,
    }
    if args.phase == "drain":
        elapsed = seen["last"] - seen["first"]
        out.update(seconds=round(elapsed, 3), events_per_s=round(args.events / elapsed))
    if args.phase == "latency":
        latencies.sort()
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)  # noqa: E731
        out.update(
            rate=args.rate,
            seconds=args.latency_seconds,
            written=written,
            p50_s=pick(0.50),
            p99_s=pick(0.99),
            max_s=round(latencies[-1], 3),
        )
    return out


def steady_writer(url: str, *, rate: float, seconds: float, first_new: int) -> int:
    """Commit transactions of 10 inserts at `rate` events/s; returns the events written."""
    conn = psycopg2.connect(url)
    tx_per_s = rate / 10
    began = time.monotonic()
    n = 0
    with conn.cursor() as cur:
        while time.monotonic() - began < seconds:
            base = first_new + n * 10
            cur.execute(
                "INSERT INTO items SELECT g, g %% 1000, 2.00, 'steady', now() "
                "FROM generate_series(%s, %s) g",
                (base, base + 9),
            )
            conn.commit()
            n += 1
            lag = began + n / tx_per_s - time.monotonic()
            if lag > 0:
                time.sleep(lag)
    conn.close()
    return n * 10


def dlt_child(args: argparse.Namespace) -> dict:
    """The peer: the same embedded engine, dlt loading into Delta with merge."""
    import dlt

    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    pipeline = dlt.pipeline(
        pipeline_name=args.pipeline,
        pipelines_dir=str(Path(args.state) / "dlt"),
        destination=dlt.destinations.filesystem(bucket_url=f"file://{args.lake}"),
        dataset_name="peer",
    )
    engine = _engine(args, snapshot=True, extra={"decimal.handling.mode": "string"})
    target = args.size if args.phase == "arm" else args.events
    # Arming loads the snapshot by appending in large runs (the rows are distinct inserts),
    # so big tables arm in minutes; the measured drain merges every engine batch.
    arming = args.phase == "arm"
    held: dict[int, dict] = {}  # the last image per key: a merge takes one source row per key
    seen, first, last = 0, None, None
    deadline = time.monotonic() + args.timeout
    try:
        while seen < target and time.monotonic() < deadline:
            batch = engine.poll(1.0)
            if not batch:
                continue
            first = first or time.perf_counter()
            rows = 0
            for record in batch:
                if record.destination != f"b.{TABLE}" or record.value is None:
                    continue
                payload = record.payload()
                image = payload["before"] if payload["op"] == "d" else payload["after"]
                held[image["id"]] = {**image, "deleted": payload["op"] == "d"}
                rows += 1
            seen += rows
            if held and (not arming or len(held) >= 200_000 or seen >= target):
                resource_ = dlt.resource(
                    list(held.values()),
                    name="items",
                    write_disposition="append" if arming else "merge",
                    primary_key="id",
                    columns={"deleted": {"hard_delete": True}},
                    table_format="delta",
                )
                pipeline.run(resource_)
                held = {}
                last = time.perf_counter()
                engine.acknowledge(batch[-1])
    finally:
        engine.close()
    out = {"events": seen, "peak_rss_mb": peak_rss_mb()}
    if args.phase == "drain" and first and last:
        out.update(seconds=round(last - first, 3), events_per_s=round(seen / (last - first)))
    return out


# -- the parent ---------------------------------------------------------------------------------
URL_ENV = "TIDEMARK_BENCH_URL"
"""The source URL reaches a child in its environment: on its command line, its password
would show in every process listing."""


def spawn(
    consumer: str,
    phase: str,
    common: list[str],
    timeout: float,
    logs: str | None = None,
    tag: str = "",
    *,
    url: str,
) -> dict:
    """Run one child; its stderr goes to `logs/<consumer>-<phase><tag>-<size>.log` if set."""
    cmd = [sys.executable, __file__, "--child", "--consumer", consumer, "--phase", phase, *common]
    began = time.monotonic()
    env = {**os.environ, URL_ENV: url}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if logs:
        size = common[common.index("--size") + 1]
        Path(logs).mkdir(parents=True, exist_ok=True)
        (Path(logs) / f"{consumer}-{phase}{tag}-{size}.log").write_text(result.stderr)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-6:]}
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(time.monotonic() - began, 1)
    return out


def run_size(url_base: str, cluster, root: Path, size: int, args: argparse.Namespace) -> dict:
    """Arm every consumer on a table of `size` rows, then per key distribution write one
    backlog and let each consumer drain it; finally the latency run."""
    db = f"e2e_{size}"
    execute(url_base, f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}")
    url = cluster.url(db)
    began = time.monotonic()
    execute(
        url,
        "CREATE TABLE items (id bigint PRIMARY KEY, account int, amount numeric(12,2),"
        " status text, updated timestamptz)",
        f"INSERT INTO items SELECT g, g % 1000, (g % 10000) / 100.0, 'open', now()"
        f" FROM generate_series(1, {size}) g",
        PROCEDURE,
    )
    transactions = args.events // 10
    distributions = args.keys.split(",")
    out: dict = {"size": size, "load_table_seconds": round(time.monotonic() - began, 1)}
    consumers = [c for c in args.consumers.split(",") if c in CONSUMERS + REFERENCE]

    def common(consumer: str, *, events: int = 0, first_new: int = 0) -> list[str]:
        return [
            "--state",
            str(root / f"state-{size}"),
            "--pipeline",
            f"{consumer}_{size}",
            "--lake",
            str(root / f"lake-{consumer}-{size}"),
            "--size",
            str(size),
            "--events",
            str(events),
            "--max-events",
            str(args.max_events),
            "--max-latency-ms",
            str(args.max_latency_ms),
            *(["--lake-cache-mb", str(args.lake_cache_mb)] if args.lake_cache_mb else []),
            "--timeout",
            str(args.timeout),
            "--rate",
            str(args.rate),
            "--latency-seconds",
            str(args.latency_seconds),
            "--first-new",
            str(first_new),
        ]

    for consumer in consumers:
        print(f"[{size}] arming {consumer}", flush=True)
        out.setdefault("arm", {})[consumer] = spawn(
            consumer, "arm", common(consumer), args.timeout, args.logs, url=url
        )
    backlogs = 0
    for keys in distributions:
        rounds = []
        for number in range(args.rounds):
            first_new = size + backlogs * (transactions + 1)
            backlogs += 1
            # each round drains in another order: a machine whose speed drifts during a
            # run favours no consumer
            turn = number % len(consumers)
            order = consumers[turn:] + consumers[:turn]
            rounds.append(
                drain_round(
                    url,
                    keys,
                    transactions,
                    size,
                    first_new,
                    order,
                    common,
                    args,
                    tag=f"{keys}-{number}" if args.rounds > 1 else keys,
                )
            )
        run = out[keys] = rounds[0]
        if len(rounds) > 1:
            run["rounds"] = [
                {
                    "order": r["order"],
                    "events_per_s": {c: r[c].get("events_per_s") for c in r["order"]},
                    "ratios": r["ratios"],
                }
                for r in rounds
            ]
            run["ratios"] = {
                name: round(statistics.median(values), 3)
                for name in rounds[0]["ratios"]
                if (values := [r["ratios"][name] for r in rounds if r["ratios"][name]])
            }
    first_new = size + backlogs * (transactions + 1)
    for consumer, key in (("tidemark", "latency"), ("tidemark_mor", "latency_mor")):
        if consumer not in consumers or args.latency_seconds <= 0:
            continue
        print(f"[{size}] latency of {consumer} at {args.rate:.0f} events/s", flush=True)
        load = os.getloadavg()
        out[key] = spawn(
            consumer,
            "latency",
            common(consumer, first_new=first_new),
            args.timeout,
            args.logs,
            url=url,
        )
        out[key]["load_average_at_start"] = load
        first_new += int(args.rate * args.latency_seconds) + 1_000
        print(f"  {out[key]}", flush=True)
    return out


def drain_round(
    url: str,
    keys: str,
    transactions: int,
    size: int,
    first_new: int,
    consumers: list[str],
    common: Callable[..., list[str]],
    args: argparse.Namespace,
    tag: str,
) -> dict:
    """Write one backlog of `keys` updates, let each consumer drain it in turn; their
    events/s and ratios (`tag` names the children's logs)."""
    began = time.monotonic()
    execute(
        url,
        "DELETE FROM bench_backlogs",
        f"CALL bench_backlog({transactions}, {size}, {first_new}, '{keys}')",
    )
    run: dict = {
        "backlog_seconds": round(time.monotonic() - began, 1),
        "events": query_one(url, f"SELECT events FROM bench_backlogs WHERE keys = '{keys}'"),
        "order": consumers,
    }
    for consumer in consumers:
        print(f"[{size} {keys}] draining {consumer}", flush=True)
        load = os.getloadavg()
        run[consumer] = spawn(
            consumer,
            "drain",
            common(consumer, events=run["events"]),
            args.timeout,
            args.logs,
            tag=tag,
            url=url,
        )
        run[consumer]["load_average_at_start"] = load
        print(f"  {run[consumer]}", flush=True)
    cap, tm, mor, peer = (run.get(c, {}).get("events_per_s") for c in CONSUMERS)
    run["ratios"] = {
        "tidemark_vs_capture": round(tm / cap, 3) if tm and cap else None,
        "tidemark_mor_vs_capture": round(mor / cap, 3) if mor and cap else None,
        "tidemark_mor_vs_tidemark": round(mor / tm, 2) if mor and tm else None,
        "tidemark_vs_dlt": round(tm / peer, 2) if tm and peer else None,
    }
    raw = run.get("capture_raw", {}).get("events_per_s")
    if raw and tm:
        run["ratios"]["tidemark_vs_capture_raw"] = round(tm / raw, 3)
    return run


def query_one(url: str, sql: str) -> int:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(sql)
        value = cur.fetchone()[0]
    conn.close()
    return int(value)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for keys, style in (("recent", "-"), ("uniform", "--")):
        for consumer in CONSUMERS:
            values = [r.get(keys, {}).get(consumer, {}).get("events_per_s") for r in results]
            if any(values):
                left.plot(
                    sizes,
                    [v or 0 for v in values],
                    style,
                    marker="o",
                    label=f"{consumer} ({keys} keys)",
                )
    left.set(
        xscale="log",
        xlabel="live table rows",
        ylabel="events/s (sustained)",
        title="throughput end to end",
    )
    left.legend()
    for run, mode in (("latency", "copy-on-write"), ("latency_mor", "merge-on-read")):
        for key, label in (("p50_s", "p50"), ("p99_s", "p99")):
            values = [r.get(run, {}).get(key) for r in results]
            if any(v is not None for v in values):
                right.plot(sizes, [v or 0 for v in values], marker="o", label=f"{label} {mode}")
    right.set(
        xscale="log",
        xlabel="live table rows",
        ylabel="seconds",
        title="commit-to-queryable latency at 1,000 events/s",
    )
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="live table rows, comma-separated")
    parser.add_argument("--events", type=int, default=100_000, help="backlog events")
    parser.add_argument(
        "--keys",
        default="recent,uniform",
        help="update key distributions, one backlog each: recent (the"
        " simulator's default skew), uniform (worst case)",
    )
    parser.add_argument(
        "--consumers",
        default=",".join(CONSUMERS),
        help=f"any of {', '.join(CONSUMERS + REFERENCE)}",
    )
    parser.add_argument("--max-events", type=int, default=50_000)
    parser.add_argument("--max-latency-ms", type=int, default=500)
    parser.add_argument("--lake-cache-mb", type=int, help="tidemark's bucket cache, MiB")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency run events/s")
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="backlogs per key distribution, each drained by every consumer in a rotated"
        " order; the ratios are the rounds' medians",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--logs", help="a directory for the children's logs")
    parser.add_argument(
        "--out",
        default=str(RESULTS / "e2e.json"),
        help="the JSON report (the plot goes beside it as .png)",
    )
    # child-only options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--consumer", "--phase", "--state", "--pipeline", "--lake"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first-new", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import logging

        args.url = os.environ[URL_ENV]

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        try:
            result = child(args)
            code = 0
        except BaseException as exc:  # report it; the parent records the error
            import traceback

            traceback.print_exc()
            result, code = {"error": repr(exc)}, 1
        print(json.dumps(result), flush=True)
        sys.stderr.flush()
        os._exit(code)  # do not wait for the JVM's shutdown (its hooks are not ours to debug)

    from tidemark.connectors.postgres.cluster import LocalCluster

    report = Path(args.out)
    root = Path(tempfile.mkdtemp(prefix="tidemark-bench-e2e-"))
    root.chmod(0o755)
    cluster = LocalCluster(root / "pg")
    url = cluster.start()
    out: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "options": {
            k: v
            for k, v in vars(args).items()
            if k
            in (
                "sizes",
                "events",
                "keys",
                "consumers",
                "max_events",
                "max_latency_ms",
                "rate",
                "latency_seconds",
                "lake_cache_mb",
            )
        },
        "command": "python bench/e2e.py " + " ".join(sys.argv[1:]),
        "results": [],
    }
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            out["results"].append(run_size(url, cluster, root, size, args))
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        out["machine"]["load_average_at_end"] = os.getloadavg()
        cluster.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    report.write_text(json.dumps(out, indent=2) + "\n")
    try:
        plot(out["results"], report.with_suffix(".png"))
    except ImportError:  # matplotlib comes with the bench extra
        print("no plot: pip install -e '.[bench]'", file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Arming a big table: the parallel loader against Debezium's snapshot and a raw COPY.

For each table (a `bank`-profile accounts table of `--rows` rows, and a wide one with text
and jsonb columns of `--wide-rows`), in one run on one cluster:
  copy       `COPY (SELECT * FROM t) TO STDOUT (FORMAT csv)` into /dev/null: the ceiling
  loader-N   the parallel loader with N workers (1, 2, 4): snapshot, ranges, COPY into
             typed Arrow, the three layers as bulk files, the hand-over; seconds until the
             table is queryable, rows/s, then the end-of-load row/hash check separately
  debezium   Debezium's snapshot through the production pipeline into the three layers
  armed      `tidemark run`'s start-up on a fresh source (slot, loads, engine started):
             seconds until the runner streams, for `--armed-rows` rows
Every arm runs in a child process: its peak RSS is the child's. The machine's load average
is recorded at the start and end of each arm (the machine is shared).

    python bench/snapshot.py --rows 10000000 --wide-rows 2000000 --armed-rows 2000000
With `--repeat N`, N-1 more rounds of COPY then each loader follow the first, their ratios
side by side per round (the shared machine's speed drifts by a third within minutes).
Writes bench/results/snapshot.json.
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
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results" / "snapshot.json"

BANK = """
CREATE TABLE IF NOT EXISTS public.{name} (
  id bigint PRIMARY KEY, customer_id bigint NOT NULL, account_type text NOT NULL,
  iban text NOT NULL, currency text NOT NULL, balance numeric(14,2) NOT NULL,
  credit_limit numeric(14,2), interest_rate numeric(6,4), status text NOT NULL,
  opened_on date NOT NULL, modified_at timestamptz NOT NULL DEFAULT now());
INSERT INTO public.{name}
SELECT g, g / 3, (ARRAY['checking','savings','credit','loan'])[1 + g % 4],
  'DE' || lpad((g * 7919 % 100000000)::text, 20, '0'), (ARRAY['EUR','USD','GBP'])[1 + g % 3],
  (g * 37 % 1000000) / 100.0, CASE WHEN g % 5 = 0 THEN 5000 END,
  CASE WHEN g % 2 = 0 THEN (g % 700) / 10000.0 END, (ARRAY['open','frozen','closed'])[1 + g % 3],
  DATE '2015-01-01' + (g % 3650)::int, TIMESTAMPTZ '2026-01-01' + g * INTERVAL '1 second'
FROM generate_series(1::bigint, {rows}) g;
"""

WIDE = """
CREATE TABLE IF NOT EXISTS public.{name} (
  id bigint PRIMARY KEY, title text NOT NULL, body text, tags text[],
  attrs jsonb NOT NULL, meta jsonb, created timestamptz NOT NULL, amount numeric(12,2));
INSERT INTO public.{name}
SELECT g, 'title ' || g, repeat(md5(g::text), 6), ARRAY['t' || (g % 10), 'u' || (g % 7)],
  jsonb_build_object('id', g, 'kind', g % 17, 'name', 'n' || g,
                     'flags', jsonb_build_array(g % 2, g % 3)),
  CASE WHEN g % 3 = 0 THEN jsonb_build_object('note', repeat('x', 50)) END,
  TIMESTAMPTZ '2026-01-01' + g * INTERVAL '1 second', (g % 100000) / 100.0
FROM generate_series(1::bigint, {rows}) g;
"""


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def execute(url: str, sql: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


URL_ENV = "TIDEMARK_BENCH_URL"
"""The source URL reaches a child in its environment: on its command line, its password
would show in every process listing."""


def child(arm: str, *, url: str, **args: object) -> dict:
    """Run one arm in a child process; its JSON result plus its peak RSS."""
    spec = json.dumps({"arm": arm, **args})
    started = time.perf_counter()
    before = load_average()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, URL_ENV: url},
    )
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"arm {arm} failed")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if isinstance(args.get("lake"), str):  # a 10M-row lake is a few GB: one at a time
        shutil.rmtree(str(args["lake"]), ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["load_before"], result["load_after"] = before, load_average()
    return result


# -- the arms (in the child) -------------------------------------------------------------
def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def arm_copy(url: str, table: str, **_: object) -> dict:
    conn = psycopg2.connect(url)
    started = time.perf_counter()
    with conn.cursor() as cur, open(os.devnull, "wb") as sink:
        cur.copy_expert(f"COPY (SELECT * FROM public.{table}) TO STDOUT WITH (FORMAT csv)", sink)
        rows = cur.rowcount
    seconds = time.perf_counter() - started
    conn.close()
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def _config(url: str, lake: str, table: str, name: str, extra: dict) -> object:
    from tidemark.config import parse_config

    return parse_config(
        {
            "pipeline": name,
            "lake": lake,
            "sources": [{"name": "bench", "kind": "postgres", "dsn": url, "tables": [table]}],
            "debezium": {"heartbeat_ms": 1000},
            **extra,
        }
    )


def arm_loader(
    url: str, table: str, workers: int, lake: str, check: bool = True, **_: object
) -> dict:
    from deltalake import DeltaTable

    from tidemark.connectors.postgres.exported import exported_snapshot
    from tidemark.connectors.postgres.loader import worker_connection
    from tidemark.connectors.postgres.setup import drop_slot, table_shapes
    from tidemark.loading import make_check
    from tidemark.startload import arm_sources
    from tidemark.stream_processors.loading.spec import TableSpec

    name = f"bench_loader_{workers}"
    snapshot = {"snapshot": {"*": {"max_workers": workers, "check": "none"}}}
    config = _config(url, lake, f"public.{table}", name, snapshot)
    source = config.sources[0]
    started = time.perf_counter()
    try:
        arm_sources(config)  # slot, marker, snapshot, load
    finally:
        drop_slot(url, f"tidemark_{name}_bench")
    queryable = time.perf_counter() - started
    rows = DeltaTable(f"{lake}/live/bench.public.{table}").count()
    if not check:
        return {"rows": rows, "queryable_s": round(queryable, 2)}
    # the check alone, on the loaded lake (a second, unchanged load reconciles nothing)
    checked = time.perf_counter()
    keys = {t: tuple(s.key) for t, s in table_shapes(url, source.tables).items()}
    with exported_snapshot(url, signal_table=None, note="bench check") as snapshot:
        conn = worker_connection(url, snapshot)
        verdict = make_check(config, source)(
            conn.cursor(),
            TableSpec(
                f"bench.public.{table}",
                "bench",
                "public",
                table,
                keys[f"public.{table}"],
                frozenset(),
            ),
        )
        conn.close()
    return {
        "rows": rows,
        "queryable_s": round(queryable, 2),
        "rows_per_s": round(rows / queryable),
        "check_s": round(time.perf_counter() - checked, 2),
        "check": verdict.status,
        "peak_rss_mb": _peak_mb(),
    }


def arm_debezium(url: str, table: str, lake: str, rows: int, **_: object) -> dict:
    import threading

    from deltalake import DeltaTable

    from tidemark.connectors.postgres.setup import drop_slot
    from tidemark.pipeline import build_runner, run_until, start_jvm_for

    name = "bench_dbz"
    config = _config(
        url, lake, f"public.{table}", name, {"snapshot": {"*": {"loader": "debezium"}}}
    )
    state = Path(lake) / "state"
    start_jvm_for(config, state)
    stop = threading.Event()
    started = time.perf_counter()
    runner, lake_facade = build_runner(config, state=state, stop=stop)
    thread = threading.Thread(target=run_until, args=(runner, stop), daemon=True)
    thread.start()
    path = f"{lake}/live/bench.public.{table}"
    count = 0
    try:
        while count < rows:
            time.sleep(1.0)
            if os.path.isdir(f"{path}/_delta_log"):
                count = DeltaTable(path).count()
            if not thread.is_alive():
                raise SystemExit("the pipeline stopped")
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(300)
        lake_facade.close()
        drop_slot(url, f"tidemark_{name}_bench")
    return {
        "rows": count,
        "queryable_s": round(seconds, 2),
        "rows_per_s": round(count / seconds),
        "peak_rss_mb": _peak_mb(),
    }


def arm_armed(url: str, table: str, lake: str, **_: object) -> dict:
    """`tidemark run`'s start-up on a fresh source: until the runner streams."""
    import threading

    from tidemark.connectors.postgres.setup import drop_slot
    from tidemark.pipeline import build_runner, run_until, start_jvm_for

    name = "bench_armed"
    config = _config(url, lake, f"public.{table}", name, {})
    state = Path(lake) / "state"
    started = time.perf_counter()
    start_jvm_for(config, state)
    stop = threading.Event()
    runner, lake_facade = build_runner(config, state=state, stop=stop)
    loaded = time.perf_counter() - started
    thread = threading.Thread(target=run_until, args=(runner, stop), daemon=True)
    thread.start()
    try:
        while runner.heartbeats == 0:
            time.sleep(0.1)
            if not thread.is_alive():
                raise SystemExit("the pipeline stopped")
        streaming = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(120)
        lake_facade.close()
        drop_slot(url, f"tidemark_{name}_bench")
    return {
        "loaded_s": round(loaded, 2),
        "streaming_s": round(streaming, 2),
        "peak_rss_mb": _peak_mb(),
    }


def rounds(url: str, table: str, work: Path, workers: str, count: int) -> dict:
    """`count` more rounds of the raw COPY then each loader (no check), one right after the
    other: each round's ratio, and their median, are what a noisy shared machine allows."""
    ratios: dict[str, list[float]] = {}
    for _ in range(count):
        copy = child("copy", url=url, table=table)["seconds"]
        for n in [int(w) for w in workers.split(",")]:
            lake = str(work / f"{table}-round-{n}")
            load = child("loader", url=url, table=table, workers=n, lake=lake, check=False)
            ratios.setdefault(f"loader_{n}", []).append(round(copy / load["queryable_s"], 3))
    return {
        name: {"of_copy": values, "median": round(statistics.median(values), 3)}
        for name, values in ratios.items()
    }


ARMS = {"copy": arm_copy, "loader": arm_loader, "debezium": arm_debezium, "armed": arm_armed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="bank table rows")
    parser.add_argument("--wide-rows", type=int, default=2_000_000, help="wide table rows")
    parser.add_argument("--armed-rows", type=int, default=2_000_000, help="start-up table rows")
    parser.add_argument("--workers", default="1,2,4", help="loader worker counts")
    parser.add_argument("--no-debezium", action="store_true", help="skip Debezium's snapshot")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="more rounds of COPY then each loader, side by side, for the ratio's spread",
    )
    parser.add_argument("--url", help="an existing Postgres (wal_level=logical)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(ARMS[spec.pop("arm")](url=os.environ[URL_ENV], **spec)))
        return

    from tidemark.connectors.postgres.cluster import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="tm-bench-snapshot-"))
    work.chmod(0o755)
    cluster = None
    url = args.url
    if url is None:
        cluster = LocalCluster(work / "cluster")
        url = cluster.start()
    results: dict = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_start": load_average(),
        "tables": {},
    }
    tables = [("accounts", BANK, args.rows), ("wide", WIDE, args.wide_rows)]
    if args.armed_rows:
        tables.append(("armed", BANK, args.armed_rows))
    try:
        for name, ddl, rows in tables:
            if not rows:
                continue
            print(f"== {name}: creating {rows:,} rows", flush=True)
            execute(url, ddl.format(name=name, rows=rows))
            execute(url, f"VACUUM ANALYZE public.{name}")
            arms: dict = {"rows": rows}
            arms["copy"] = child("copy", url=url, table=name)
            print(f"   copy {arms['copy']}", flush=True)
            if name == "armed":
                arms["armed"] = child("armed", url=url, table=name, lake=str(work / "armed"))
                arms["armed"]["x_copy"] = round(
                    arms["armed"]["streaming_s"] / arms["copy"]["seconds"], 2
                )
                print(f"   armed {arms['armed']}", flush=True)
                results["tables"][name] = arms
                continue
            for workers in [int(w) for w in args.workers.split(",")]:
                lake = str(work / f"{name}-loader-{workers}")
                result = child("loader", url=url, table=name, workers=workers, lake=lake)
                result["of_copy"] = round(result["rows_per_s"] / arms["copy"]["rows_per_s"], 3)
                arms[f"loader_{workers}"] = result
                print(f"   loader-{workers} {result}", flush=True)
            if args.repeat > 1:
                arms["rounds"] = rounds(url, name, work, args.workers, args.repeat - 1)
                print(f"   rounds {arms['rounds']}", flush=True)
            if not args.no_debezium:
                lake = str(work / f"{name}-debezium")
                arms["debezium"] = child("debezium", url=url, table=name, lake=lake, rows=rows)
                print(f"   debezium {arms['debezium']}", flush=True)
                for key, value in list(arms.items()):
                    if key.startswith("loader_"):
                        value["x_debezium"] = round(
                            value["rows_per_s"] / arms["debezium"]["rows_per_s"], 2
                        )
            results["tables"][name] = arms
    finally:
        results["load_average_end"] = load_average()
        if cluster is not None:
            cluster.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

"""Sink benchmark: changes/s and commit latency into live + forensic + changelog.

    python bench/sinks.py [--sizes 100k,1m] [--keys skew,uniform] [--batch-size 30000]
                          [--batches 8] [--history 10] [--baseline-batches 3]
                          [--modes copy_on_write,merge_on_read] [--read-after 100]

For each size and key distribution (each in its own process, for a clean peak RSS):
  1. load N current rows through the Lake (snapshot batches of <= 1M rows);
  2. "fresh": run --batches batches of --batch-size changes (current_versions + commit_batch);
  3. append --history x N closed versions to the forensic history, run the batches again;
  4. baseline, same events: plain unpartitioned tables, live by MERGE, forensic by MERGE
     (close) + append, changelog by append; before and after the same history.
Both write modes of live and forensic (`--modes`) run as separate parts on the same events.
With `--read-after N`, after the fresh phase batches go on until N have committed, then the
live and forensic tables are read whole (delta-rs `scan()` into Arrow, and DuckDB
`delta_scan`, both applying deletion vectors) before maintenance and after it caught up
(rounds until one compacts nothing).
Each phase starts with one unmeasured warm-up batch (the first batch after a load, or after
the history was bulk-loaded by another process, refreshes the table state and reads the
touched buckets cold; a restart pays that once, steady state does not). Figures are printed
and written to bench/results/sinks.json. Timings on a shared 2-core box are noisy: compare
the design and the baseline from the same run, and look at the CPU seconds per batch
(`time.process_time`, all threads of the process), which other people's load disturbs much
less than wall time.
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
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import deltalake  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402
from deltalake import DeltaTable, write_deltalake  # noqa: E402

from bench import sink_workload as wl  # noqa: E402
from tidemark.kernel import columns as c  # noqa: E402
from tidemark.sinks.delta.table import table_uri  # noqa: E402
from tidemark.sinks.lake import Lake  # noqa: E402
from tidemark.sinks.layout import DEFAULT_RANGE_SIZE  # noqa: E402

LOAD_CHUNK = 1_000_000


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * factor)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean": statistics.fmean(ordered),
        "p50": ordered[len(ordered) // 2],
        "max": ordered[-1],
    }


def history_rows(n_rows: int, top: int, start: int) -> pa.Table:
    """Closed versions of keys spread over 0..top-1 (what years of updates leave behind)."""
    ids = pa.array([(start + i) * 7919 % top for i in range(n_rows)], pa.int64())
    seqs = pa.array(range(start, start + n_rows), pa.int64())
    rows = wl.source_rows(ids, seqs)
    ts = rows["updated_at"]
    return pa.table(
        {
            **rows,
            c.VALID_FROM: ts,
            c.VALID_TO: ts,
            c.BATCH_IN: pa.repeat(pa.scalar(0, pa.int64()), n_rows),
            c.BATCH_OUT: pa.repeat(pa.scalar(0, pa.int64()), n_rows),
            c.OP: pa.repeat(pa.scalar("u"), n_rows),
            c.POSITION: wl.pos_array(seqs),
        }
    )


def add_history(uri: str, n_rows: int, top: int, *, bucketed: bool, range_size: int = 0) -> float:
    started = time.perf_counter()
    for start in range(0, n_rows, LOAD_CHUNK):
        rows = history_rows(min(LOAD_CHUNK, n_rows - start), top, start)
        dt = DeltaTable(uri)
        partitions = dt.metadata().partition_columns if bucketed else []
        if c.CURRENT in partitions:
            rows = rows.append_column(c.CURRENT, pa.repeat(False, rows.num_rows))
        if c.BUCKET in partitions:
            rows = rows.append_column(
                c.BUCKET, pc.divide(rows.column("id"), pa.scalar(range_size, pa.int64()))
            )
        rows = rows.select(pa.schema(dt.schema().to_arrow()).names)
        write_deltalake(dt, rows, mode="append")
    return time.perf_counter() - started


# -- the design -------------------------------------------------------------------------------


def load_design(root: str, size: int, range_size: int, mode: str) -> None:
    """The initial snapshot, in a child process so its peak memory is not the steady state's."""
    lake = Lake(root, app_id="bench", range_size=range_size, write_modes={"*": mode})  # type: ignore[dict-item]
    batch_id = 0
    for start in range(0, size, LOAD_CHUNK):
        batch_id += 1
        mt = wl.initial_load(start, min(LOAD_CHUNK, size - start), batch_id=batch_id)
        lake.commit_batch(
            batch_id, [mt], source_positions={"src": mt.last_position}, started_at=datetime.now(UTC)
        )
    lake.close()


def child(*argv: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, *argv], check=True)
    return time.perf_counter() - started


def read_times(root: str) -> dict:
    """Seconds to read the live and forensic tables whole, with DV-applying readers (the
    best of three reads each)."""
    import duckdb

    from tidemark.sinks.readers import read_table
    from tidemark.sinks.views.duck import load_delta

    out = {}
    for layer in ("live", "forensic"):
        uri = table_uri(root, layer, wl.TABLE)
        scans, ducks = [], []
        for _ in range(3):  # best of three: the machine is shared
            started = time.perf_counter()
            rows = read_table(DeltaTable(uri)).num_rows
            scans.append(time.perf_counter() - started)
            con = duckdb.connect()
            load_delta(con)
            started = time.perf_counter()
            duck = con.sql(f"SELECT count(*), sum(amount) FROM delta_scan('{uri}')").fetchall()
            ducks.append(time.perf_counter() - started)
        scan_s, duck_s = min(scans), min(ducks)
        files = len(DeltaTable(uri).file_uris())
        out[layer] = {"rows": rows, "files": files, "scan_s": scan_s, "duckdb_s": duck_s}
        assert duck[0][0] == rows
    return out


def lookup_strategies(lake: Lake, size: int, batch_size: int) -> dict:
    """Merge-on-read must find where a batch's keys live. Two ways, timed on one table:
    the writer's key index (built once, then kept in step), or per batch a scan of the key
    column of every file whose statistics (min/max id) may hold a batch key."""
    import random

    import pyarrow.parquet as pq

    from tidemark.sinks.delta.dv.commit import DvTable
    from tidemark.sinks.delta.files import table_filesystem

    sink = lake.sink(wl.TABLE, c.Layer.FORENSIC)
    assert sink.mor is not None
    started = time.perf_counter()
    sink.mor.table.ready(("id",))
    build_s = time.perf_counter() - started
    keys = pa.table({"id": pa.array(random.Random(1).sample(range(size), batch_size), pa.int64())})
    started = time.perf_counter()
    found = sink.mor.table.locate(keys)
    locate_s = time.perf_counter() - started
    table = DvTable(sink.handle.uri)
    low, high = pc.min(keys["id"]).as_py(), pc.max(keys["id"]).as_py()
    files = [e for e in table.state.files.values() if e.partition_values.get(c.CURRENT) == "true"]
    kept = []
    for entry in files:
        stats = json.loads(entry.add.get("stats") or "{}")
        lo, hi = stats.get("minValues", {}).get("id"), stats.get("maxValues", {}).get("id")
        if lo is None or hi is None or (lo <= high and hi >= low):
            kept.append(entry)
    fs = table_filesystem(sink.handle.dt)
    started = time.perf_counter()
    hits = 0
    for entry in kept:
        ids = pq.read_table(entry.local_path, filesystem=fs, columns=["id"]).column("id")
        hits += pc.sum(pc.is_in(ids, value_set=keys["id"])).as_py() or 0
    scan_s = time.perf_counter() - started
    return {
        "rows": size,
        "batch_keys": batch_size,
        "index_build_seconds": build_s,
        "index_locate_seconds": locate_s,
        "index_found": found.num_rows,
        "files_in_scope": len(files),
        "files_after_stats_pruning": len(kept),
        "key_scan_seconds": scan_s,
        "key_scan_found": hits,
    }


def caught_up(lake: Lake, most: int = 10) -> int:
    """Maintenance rounds until one after the first compacts nothing: a round rewrites at
    most `Policy.round_rows` rows, and the background thread runs one every 30 s, so a
    table read a few minutes after 100 batches is compacted this far. The rounds after
    the first find the table idle and fold every deletion vector (`Policy.every_dv`), as
    a table no writer touched for a minute is left. Returns the rounds run."""
    assert lake.maintenance is not None
    for rounds in range(1, most + 1):
        before = lake.maintenance.files_compacted
        lake.wait_idle(timeout=1800)
        if rounds > 1 and lake.maintenance.files_compacted == before:
            return rounds
    return most


def run_design(root: str, size: int, args: argparse.Namespace) -> dict:
    mode = args.part if args.part in ("copy_on_write", "merge_on_read") else "copy_on_write"
    load_s = child("--load", root, str(size), "--range-size", str(args.range_size), "--part", mode)
    # Maintenance runs only between phases (timed on its own): left free-running it would
    # start mid-phase and blur the fresh-versus-aged comparison with its own CPU use.
    lake = Lake(
        root,
        app_id="bench",
        maintenance=True,
        range_size=args.range_size,
        write_modes={"*": mode},  # type: ignore[dict-item]
    )
    assert lake.maintenance is not None
    lake.maintenance.interval = 10**6
    # "After maintenance" reads the table as one left quiet for `idle_after` (a minute) is:
    # every DV folded (docs/sinks.md); the rounds here follow each other at once.
    lake.maintenance.idle_after = 0
    batch_id = lake.last_batch_id()
    work = wl.Workload(size, keys=args.keys)
    lookup = lookup_strategies(lake, size, args.batch_size) if mode == "merge_on_read" else None

    def phase(n: int) -> dict:
        nonlocal batch_id
        totals, lookups, layers = [], [], {layer.value: [] for layer in c.Layer}
        cpu = []
        for i in range(n + 1):
            batch_id += 1
            ids, ops, seqs = work.next_events(args.batch_size)
            t0 = time.perf_counter()
            c0 = time.process_time()
            keys = pa.table({"id": pc.unique(ids)})
            current = lake.current_versions(wl.TABLE, keys)
            t1 = time.perf_counter()
            c1 = time.process_time()
            mt = wl.milestone(ids, ops, seqs, current, batch_id=batch_id)
            t2 = time.perf_counter()
            c2 = time.process_time()
            result = lake.commit_batch(
                batch_id,
                [mt],
                source_positions={"src": mt.last_position},
                started_at=datetime.now(UTC),
            )
            t3 = time.perf_counter()
            if i == 0:
                continue  # warm-up: the first batch after a load or restart reads cold
            cpu.append((c1 - c0) + (time.process_time() - c2))
            lookups.append(t1 - t0)
            totals.append((t1 - t0) + (t3 - t2))
            for commit in result.commits:
                layers[commit.layer.value].append(commit.seconds)
        return {
            "changes_per_s": args.batch_size * n / sum(totals),
            "changes_per_cpu_s": args.batch_size * n / sum(cpu),
            "sink_seconds_per_batch": summary(totals),
            "cpu_seconds_per_batch": summary(cpu),
            "lookup_seconds": summary(lookups),
            "commit_seconds": {k: summary(v) for k, v in layers.items()},
        }

    fresh = phase(args.batches)
    reads: dict = {}
    if args.read_after:
        more = args.read_after - args.batches - 1
        reads["after_batches"] = args.read_after
        reads["more_batches"] = phase(more) if more > 1 else None
        reads["before_maintenance"] = read_times(root)
        started = time.perf_counter()
        reads["maintenance_rounds"] = caught_up(lake)
        reads["maintenance_seconds"] = time.perf_counter() - started
        reads["after_maintenance"] = read_times(root)
    started = time.perf_counter()
    lake.wait_idle(timeout=1800)
    maintenance_s = time.perf_counter() - started
    if not args.history:
        lake.close()
        return {
            "mode": mode,
            "load_seconds": load_s,
            "fresh": fresh,
            "reads": reads,
            "lookup_strategies": lookup,
        }
    history_s = child(
        "--history-only",
        root,
        str(args.history * size),
        str(work.top),
        "--range-size",
        str(args.range_size),
    )
    # A long-lived lake's history is compacted as it grows; compact the bulk-loaded history
    # once before measuring (timed separately), as the maintenance thread would have.
    started = time.perf_counter()
    lake.wait_idle(timeout=1800)
    compact_s = time.perf_counter() - started
    aged = phase(args.batches)
    started = time.perf_counter()
    lake.wait_idle(timeout=1800)
    maintenance_s += time.perf_counter() - started
    compacted = lake.maintenance.files_compacted
    lake.close()
    return {
        "mode": mode,
        "reads": reads,
        "lookup_strategies": lookup,
        "load_seconds": load_s,
        "history_load_seconds": history_s,
        "history_compaction_seconds": compact_s,
        "maintenance_round_seconds": maintenance_s / 2,
        "fresh": fresh,
        "after_history": aged,
        "maintenance_files_compacted": compacted,
    }


# -- the baseline: plain MERGE ----------------------------------------------------------------


def run_baseline(root: str, size: int, args: argparse.Namespace) -> dict:
    live_uri, forensic_uri, log_uri = (f"{root}/{name}" for name in ("live", "forensic", "log"))
    batch_id = 0
    for start in range(0, size, LOAD_CHUNK):
        batch_id += 1
        mt = wl.initial_load(start, min(LOAD_CHUNK, size - start), batch_id=batch_id)
        write_deltalake(live_uri, mt.live_upserts, mode="append")
        write_deltalake(forensic_uri, mt.forensic_inserts, mode="append")
        write_deltalake(log_uri, mt.changelog, mode="append")
    work = wl.Workload(size, keys=args.keys)

    def phase(n: int) -> dict:
        nonlocal batch_id
        totals, layers = [], {layer.value: [] for layer in c.Layer}
        cpu = []
        for i in range(n + 1):
            batch_id += 1
            ids, ops, seqs = work.next_events(args.batch_size)
            t0 = time.perf_counter()
            c0 = time.process_time()
            forensic = DeltaTable(forensic_uri)
            keys = pc.unique(ids)
            current = forensic.to_pyarrow_dataset().to_table(
                filter=ds.field("id").isin(keys) & ds.field(c.VALID_TO).is_null()
            )
            t1 = time.perf_counter()
            c1 = time.process_time()
            mt = wl.milestone(ids, ops, seqs, current, batch_id=batch_id)
            t2 = time.perf_counter()
            c2 = time.process_time()
            write_deltalake(log_uri, mt.changelog, mode="append")
            t3 = time.perf_counter()
            deletes = mt.live_deletes.append_column(c.OP, pa.repeat("d", mt.live_deletes.num_rows))
            source = pa.concat_tables([mt.live_upserts, deletes], promote_options="permissive")
            (
                DeltaTable(live_uri)
                .merge(source, "t.id = s.id", source_alias="s", target_alias="t")
                .when_matched_delete(f"s.{c.OP} = 'd'")
                .when_matched_update_all(f"s.{c.OP} != 'd'")
                .when_not_matched_insert_all(f"s.{c.OP} != 'd'")
                .execute()
            )
            t4 = time.perf_counter()
            if mt.forensic_closes.num_rows:
                (
                    forensic.merge(
                        mt.forensic_closes,
                        f"t.id = s.id AND t.{c.VALID_TO} IS NULL",
                        source_alias="s",
                        target_alias="t",
                    )
                    .when_matched_update(
                        {c.VALID_TO: f"s.{c.VALID_TO}", c.BATCH_OUT: f"s.{c.BATCH_OUT}"}
                    )
                    .execute()
                )
            write_deltalake(forensic, mt.forensic_inserts, mode="append")
            t5 = time.perf_counter()
            if i == 0:
                continue  # warm-up, as for the design
            cpu.append((c1 - c0) + (time.process_time() - c2))
            totals.append((t1 - t0) + (t5 - t2))
            layers["changelog"].append(t3 - t2)
            layers["live"].append(t4 - t3)
            layers["forensic"].append(t5 - t4)
        return {
            "changes_per_s": args.batch_size * n / sum(totals),
            "changes_per_cpu_s": args.batch_size * n / sum(cpu),
            "sink_seconds_per_batch": summary(totals),
            "cpu_seconds_per_batch": summary(cpu),
            "commit_seconds": {k: summary(v) for k, v in layers.items()},
        }

    fresh = phase(args.baseline_batches)
    add_history(forensic_uri, args.history * size, work.top, bucketed=False)
    aged = phase(args.baseline_batches)
    return {"fresh": fresh, "after_history": aged}


def run_one(args: argparse.Namespace) -> dict:
    """One part (design or baseline) for one size and key mode; peak RSS is this process's."""
    size = parse_size(args.one)
    runner = run_baseline if args.part == "plain_merge" else run_design
    root = tempfile.mkdtemp(prefix=f"sinks-lake-bench-{args.part}-", dir="/tmp")
    try:
        result = runner(root, size, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1m")
    parser.add_argument("--keys", default="skew,uniform")
    parser.add_argument("--batch-size", type=int, default=30_000)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--baseline-batches", type=int, default=3)
    parser.add_argument("--range-size", type=int, default=DEFAULT_RANGE_SIZE)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--modes", default="copy_on_write,merge_on_read")
    parser.add_argument("--read-after", type=int, default=0, help="read tables after N batches")
    parser.add_argument("--merge", action="store_true", help="keep other runs already in --out")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "sinks.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="design", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--history-only", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_design(args.load[0], parse_size(args.load[1]), args.range_size, args.part)
        return
    if args.history_only:
        root, n_rows, top = args.history_only
        add_history(
            table_uri(root, "forensic", wl.TABLE),
            int(n_rows),
            int(top),
            bucketed=True,
            range_size=args.range_size,
        )
        return
    if args.one:
        print(json.dumps(run_one(args)))
        return
    runs = []
    for size in args.sizes.split(","):
        for keys in args.keys.split(","):
            run = {
                "rows": parse_size(size),
                "keys": keys,
                "batch_size": args.batch_size,
                "range_size": args.range_size,
                "history_factor": args.history,
            }
            modes = args.modes.split(",")
            for part in (*modes, *(() if args.no_baseline else ("plain_merge",))):
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    size,
                    "--keys",
                    keys,
                    "--part",
                    part,
                    "--batch-size",
                    str(args.batch_size),
                    "--batches",
                    str(args.batches),
                    "--history",
                    str(args.history),
                    "--baseline-batches",
                    str(args.baseline_batches),
                    "--range-size",
                    str(args.range_size),
                    "--read-after",
                    str(args.read_after),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                run[part] = json.loads(out.strip().splitlines()[-1])
            run["load_average"] = os.getloadavg()
            run["derived"] = derive(run)
            runs.append(run)
            report(run)
    if args.merge and Path(args.out).exists():
        fresh = {(r["rows"], r["keys"]) for r in runs}
        kept = [
            r
            for r in json.loads(Path(args.out).read_text())["runs"]
            if (r["rows"], r["keys"]) not in fresh
        ]
        runs = sorted(kept + runs, key=lambda r: (r["keys"], r["rows"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "command": " ".join(["python", "bench/sinks.py", *sys.argv[1:]]),
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "deltalake": deltalake.__version__,
                    "pyarrow": pa.__version__,
                },
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


def derive(run: dict) -> dict:
    """Ratios the targets are stated in, from medians, per write mode.

    `forensic_history_ratio` is the forensic commit p50 after history over before.
    The live layer has no history, so its own ratio measures how much busier the shared
    machine was in the second phase; `forensic_history_ratio_drift_corrected` divides it out.
    `mor_over_cow`: merge-on-read changes/s over copy-on-write's, and read time ratios.
    """
    out: dict = {}
    for mode in ("copy_on_write", "merge_on_read"):
        d = run.get(mode)
        if not d or "after_history" not in d:
            continue

        def p50(phase: str, layer: str, d: dict = d) -> float:
            return d[phase]["commit_seconds"][layer]["p50"]

        forensic = p50("after_history", "forensic") / p50("fresh", "forensic")
        live = p50("after_history", "live") / p50("fresh", "live")
        out[mode] = {
            "forensic_history_ratio": forensic,
            "live_ratio_same_window": live,
            "forensic_history_ratio_drift_corrected": forensic / live,
        }
    cow, mor = run.get("copy_on_write"), run.get("merge_on_read")
    if cow and mor:
        ratio = {"changes_per_s": mor["fresh"]["changes_per_s"] / cow["fresh"]["changes_per_s"]}
        if cow.get("reads") and mor.get("reads"):
            for when in ("before_maintenance", "after_maintenance"):
                for layer in ("live", "forensic"):
                    for reader in ("scan_s", "duckdb_s"):
                        ratio[f"read_{layer}_{reader}_{when}"] = (
                            mor["reads"][when][layer][reader] / cow["reads"][when][layer][reader]
                        )
        out["mor_over_cow"] = ratio
    return out


def report(run: dict) -> None:
    for mode in ("copy_on_write", "merge_on_read", "plain_merge"):
        d = run.get(mode)
        if not d:
            continue
        line = (
            f"{run['rows']:>10,} rows {run['keys']:<8} {mode:<14} "
            f"{d['fresh']['changes_per_s']:>9,.0f}/s "
            f"({d['fresh']['changes_per_cpu_s']:>9,.0f}/cpu-s)"
        )
        if "after_history" in d:
            line += f", after history {d['after_history']['changes_per_s']:>9,.0f}/s"
        reads = d.get("reads") or {}
        for when in ("before_maintenance", "after_maintenance"):
            if when in reads:
                r = reads[when]
                line += (
                    f" | read {when.split('_')[0]} live {r['live']['scan_s']:.2f}s"
                    f" forensic {r['forensic']['scan_s']:.2f}s"
                )
        if "peak_rss_mb" in d:
            line += f" | peak RSS {d['peak_rss_mb']:.0f} MB"
        print(line, flush=True)
    print(f"  derived: {json.dumps(run['derived'])}", flush=True)


if __name__ == "__main__":
    main()

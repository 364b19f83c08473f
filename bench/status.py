"""How long `tidemark status` takes on a demo lake (issue 19: it took 8.3 s on a 20k-row one).

Makes a demo lake with `tidemark up --duration D --no-serve` in a temporary state directory
(about 500 changes/s, so 40 s give ~20k changes), unless `--config FILE` names an existing
pipeline. Then measures, N times each:

- `tidemark status` as a user runs it (a new process: interpreter start, imports, report),
  beside `tidemark --help` (the same process start and CLI, no work: the floor under load);
- the report alone in a new `Observer` (cold: the tables are opened and their logs read);
- the report again in the same `Observer` (warm: what the status page does per refresh).

Prints a table and writes bench/results/status.json with the machine's load average.

    python bench/status.py [--duration 40] [--repeat 5] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tidemark.config import load_config  # noqa: E402
from tidemark.observe.report import Observer  # noqa: E402


def demo_lake(state: Path, duration: float) -> Path:
    """Run `tidemark up` for `duration` seconds; returns the config it generated."""
    env = {**os.environ, "TIDEMARK_STATE": str(state)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tidemark",
            "up",
            "--duration",
            str(duration),
            "--no-serve",
            "--lake",
            str(state / "lake"),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 600,
    )
    return state / "up" / "pipeline.yaml"


def summary(seconds: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "runs": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=40.0, help="Seconds of `up`.")
    parser.add_argument("--repeat", type=int, default=5, help="Runs of each measurement.")
    parser.add_argument("--config", type=Path, default=None, help="An existing pipeline.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "status.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tm-status-") as tmp:
        state = Path(tmp)
        state.chmod(0o755)
        config_path = args.config or demo_lake(state, args.duration)
        env = {**os.environ, "TIDEMARK_STATE": str(state)}
        load = os.getloadavg()[0]
        cli, floor = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tidemark", "--help"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
            floor.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tidemark", "status", "--config", str(config_path)],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
            cli.append(time.perf_counter() - started)
        config = load_config(config_path)
        cold, warm = [], []
        for _ in range(args.repeat):
            observer = Observer(config, cache_s=0)
            started = time.perf_counter()
            report = observer.report()
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            observer.report(fresh=True)
            warm.append(time.perf_counter() - started)
            observer.close()
        if not args.config:
            subprocess.run(
                [sys.executable, "-m", "tidemark", "db", "stop"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=60,
            )
    rows = {t.table: t.rows for s in report.sources for t in s.tables}
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_avg_1m_before": round(load, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "lake_rows": rows,
        "changelog_rows": sum(r.get("changelog", 0) for r in rows.values()),
        "cli_status": summary(cli),
        "cli_help": summary(floor),
        "report_cold": summary(cold),
        "report_warm": summary(warm),
    }
    print(
        f"lake: {result['changelog_rows']:,} changelog rows in {len(rows)} tables "
        f"(load {result['load_avg_1m_before']} -> {result['load_avg_1m_after']})"
    )
    for name in ("cli_status", "cli_help", "report_cold", "report_warm"):
        figures = result[name]
        print(
            f"{name:12} median {figures['median_s']:.3f} s  "
            f"(min {figures['min_s']:.3f}, max {figures['max_s']:.3f}, {figures['runs']} runs)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

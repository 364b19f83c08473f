"""A load killed (kill -9) in the middle resumes: finished ranges are kept, not read again.

The first run is a child process, slowed by the rows-per-second cap and killed once a few
ranges are in the lake. Before the rerun the source changes: rows of finished ranges are
updated and deleted, rows of unfinished ones too, new rows arrive. The rerun takes a second
snapshot, reads only the unfinished ranges (rows unchanged since the first snapshot) plus
every row changed since it, and hands over; then the pipeline streams the changes made
after. The lake equals the source (`verify`), and the rows read again are few.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.loading.support import Running, config_for, execute, fetch, new_database
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.sinks.delta.table import BATCH_KEY
from tidemark.sinks.loads import LoadLog
from tidemark.stream_processors.loading.spec import LoadProgress
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

ROOT = Path(__file__).resolve().parents[2]
ROWS = 40_000


def _kill_after(config_file: Path, state: Path, ranges: int, log: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.loading.load_child", str(config_file), str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),
        text=True,
    )
    assert child.stdout is not None
    deadline = time.monotonic() + 300
    for line in child.stdout:
        if line.startswith("done") and int(line.split()[1]) >= ranges:
            break
        assert time.monotonic() < deadline and not line.startswith("finished"), line
    child.send_signal(signal.SIGKILL)
    child.wait(30)


def test_a_killed_load_resumes_with_the_ranges_it_had_not_finished(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    execute(
        url,
        "CREATE TABLE public.tm_sync (id int PRIMARY KEY)",
        "CREATE TABLE public.orders (id bigint PRIMARY KEY, qty int, note text)",
        "INSERT INTO public.orders SELECT g, g % 13, 'order ' || g"
        f" FROM generate_series(1, {ROWS}) g",
    )
    config = config_for(
        url,
        tmp_path / "lake",
        ["public.orders", "public.tm_sync"],
        snapshot={"*": {"rows_per_range": 4000, "max_workers": 2, "rows_per_second": 8000}},
    )
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    state = tmp_path / "state"
    _kill_after(config_file, state, ranges=3, log=tmp_path / "child.log")
    first = LoadLog(config.lake, app_id=config.app_id).of("src.public.orders")
    assert first is not None and first.status == "loading"

    # Meanwhile: finished ranges (low ids, the table's first pages) and unfinished ones change.
    execute(
        url,
        "UPDATE public.orders SET qty = -1 WHERE id IN (5, 6, 7, 39000)",  # moved rows
        "DELETE FROM public.orders WHERE id IN (8, 9, 39001)",
        "INSERT INTO public.orders VALUES (50001, 1, 'new')",
        "UPDATE public.orders SET note = 'x' WHERE id = 10",
    )
    views: list[LoadProgress] = []
    done = []
    slowless = config.model_copy(update={"snapshot": {}})  # the rerun at full speed
    run = Running(slowless, state, load_progress=views.append, load_done=done.append)
    try:
        result = next(r for r in done if r.table == "src.public.orders")
        assert result.ranges_kept >= 3
        assert result.ranges_read == len(first.ranges) - result.ranges_kept
        assert len(result.state.points) == 2, "a second snapshot for the rest"
        view = next(v for v in views if v.table == "src.public.orders")
        assert view.rows < ROWS - 3 * 4000 + 100, "finished ranges were not copied again"
        assert result.check is None, "start-up checks after the hand-over"
        assert result.checking is not None
        verdict = result.checking.result(timeout=120)
        assert verdict.ok, verdict
        recorded = LoadLog(config.lake, app_id=config.app_id).of("src.public.orders")
        assert recorded is not None and recorded.extra.get("check") == "OK"
        execute(
            url,
            "UPDATE public.orders SET qty = 99 WHERE id IN (1, 5, 20000)",
            "DELETE FROM public.orders WHERE id = 2",
        )
        run.wait_for(url, "tm_sync", 1)
    finally:
        run.stop()
        drop_slot(url, f"tidemark_{config.pipeline}_src")
    live = DeltaTable(str(Path(config.lake) / "live" / "src.public.orders"))
    stamped = [c[BATCH_KEY] for c in live.history() if c.get(BATCH_KEY) is not None]
    assert len(stamped) == len(set(stamped)), f"a batch id used twice: {sorted(stamped)}"
    report = verify_source(config, config.sources[0], timeout=10)
    assert report.ok, [t for t in report.tables if not t.ok]
    assert fetch(url, "SELECT count(*) FROM public.orders")[0][0] == ROWS - 3 + 1 - 1

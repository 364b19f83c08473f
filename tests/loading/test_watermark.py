"""`capture: watermark`: a table polled by its watermark column while the simulator writes.

The simulator sets `modified_at` to its transaction's start time (`now()`), as applications
do, so a change becomes visible later than its watermark says: exactly what the overlap is
for. No replication slot, no publication: the table is loaded once, then polled every second
(re-reading a window behind the highest watermark seen, so commits that land late are not
missed) and its keys compared every few seconds (deletes). At the end live equals the
source, every forensic version is one the polls observed (the changelog holds each such
observation and verify checks the two agree), and no key has more versions than it had
changes.
"""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path

import pytest

from tests.loading.support import config_for, fetch, layer, new_database
from tidemark.loading import capture_keys, schedule_jobs
from tidemark.simulator.runner import Simulator
from tidemark.startload import arm_sources
from tidemark.stream_processors.loading.schedule import Scheduler
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres]


def test_watermark_capture_keeps_live_equal_and_versions_what_it_saw(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    seed = Simulator(url, profile="bank", workers=2, max_changes=5_000)
    seed.setup()
    seed.run()
    config = config_for(
        url,
        tmp_path / "lake",
        ["public.accounts"],
        capture={
            "src.public.accounts": {
                "mode": "watermark",
                "column": "modified_at",
                "every": "1s",
                "overlap": "10s",
                "deletes_every": "3s",
            }
        },
    )
    arm_sources(config)
    assert not fetch(url, "SELECT 1 FROM pg_replication_slots WHERE database = current_database()")
    ledger = tmp_path / "ledger.jsonl"
    stop = threading.Event()
    writer = Simulator(url, profile="bank", workers=2, rate=150, ledger=ledger)
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    jobs, polled = schedule_jobs(config, capture_keys(config))
    assert sorted(j.name for j in jobs) == [
        "key diff of src.public.accounts",
        "poll of src.public.accounts",
    ]
    scheduler = Scheduler(jobs)
    thread.start()
    scheduler.start()
    try:
        threading.Event().wait(12)
        stop.set()
        thread.join(60)
    finally:
        scheduler.stop()
    for job in jobs:  # a last round after the writes stopped
        job.due = 0.0
    Scheduler(jobs).run_due()
    assert polled is not None
    polled.close()
    assert all(j.failures == 0 for j in jobs), [j.last_error for j in jobs]
    assert sum(j.runs for j in jobs if j.name.startswith("poll")) >= 5

    report = verify_source(config, config.sources[0], timeout=5)
    assert report.ok, [t for t in report.tables if not t.ok]
    forensic = layer(Path(config.lake), "forensic", "src.public.accounts")
    versions = collections.Counter(forensic.column("id").to_pylist())
    changes = collections.Counter(
        entry["key"]["id"]
        for entry in map(json.loads, ledger.read_text().splitlines())
        if entry["table"] == "public.accounts" and entry["op"] != "d"
    )
    assert any(n > 1 for n in versions.values()), "the polls saw changes"
    too_many = {k: n for k, n in versions.items() if n > changes.get(k, 0) + 1}
    assert not too_many, too_many

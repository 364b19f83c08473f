"""Reference tables (`refresh: full`): reloaded whole, a forensic version only for what changed.

The seeds' item and stock tables are not worth streaming: they are loaded once and then
reloaded on a schedule. A reload reconciles with the lake: unchanged rows add nothing,
changed rows one version, new rows their first, rows gone are deleted from live and closed
in forensic. Nothing of it goes through Debezium (the table is not even published).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from tests.loading.support import config_for, execute, fetch, layer, new_database
from tidemark.loading import capture_keys, schedule_jobs
from tidemark.startload import arm_sources
from tidemark.stream_processors.loading.schedule import Scheduler
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres]


def test_a_reload_versions_only_the_rows_that_changed(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    execute(
        url,
        "CREATE TABLE public.items (sku int PRIMARY KEY, name text, price numeric(8,2))",
        "INSERT INTO public.items SELECT g, 'item ' || g, g FROM generate_series(1, 3000) g",
    )
    config = config_for(
        url, tmp_path / "lake", ["public.items"], refresh={"src.public.items": {"every": "1h"}}
    )
    arm_sources(config)  # the first load: bulk
    assert not fetch(url, "SELECT 1 FROM pg_publication_tables WHERE tablename = 'items'")
    lake = Path(config.lake)
    assert layer(lake, "forensic", "src.public.items").num_rows == 3000

    execute(
        url,
        "UPDATE public.items SET price = price + 1 WHERE sku <= 10",
        "UPDATE public.items SET name = name WHERE sku BETWEEN 11 AND 20",  # no change
        "DELETE FROM public.items WHERE sku BETWEEN 21 AND 25",
        "INSERT INTO public.items VALUES (5001, 'new', 1), (5002, 'newer', 2)",
    )
    jobs, polled = schedule_jobs(config, capture_keys(config))
    assert [job.name for job in jobs] == ["refresh of src.public.items"]
    scheduler = Scheduler(jobs)
    for job in jobs:
        job.due = 0.0
    scheduler.run_due()
    assert (jobs[0].runs, jobs[0].failures) == (1, 0), jobs[0].last_error
    forensic = layer(lake, "forensic", "src.public.items")
    assert forensic.num_rows == 3000 + 10 + 2  # 10 changed, 2 new: nothing else
    closed = forensic.filter(pc.is_valid(forensic.column("_tm_valid_to")))
    assert sorted(closed.column("sku").to_pylist()) == [*range(1, 11), *range(21, 26)]
    changelog = layer(lake, "changelog", "src.public.items")
    ops = [r["_tm_op"] for r in changelog.to_pylist() if r["_tm_batch"] != 0]
    assert ops.count("d") == 5
    report = verify_source(config, config.sources[0], timeout=5)
    assert report.ok, [t for t in report.tables if not t.ok]

    scheduler.run_due()  # not due again for an hour: nothing happens
    assert jobs[0].runs == 1
    for job in jobs:
        job.due = 0.0
    scheduler.run_due()  # a reload of an unchanged table adds nothing
    assert polled is not None
    polled.close()
    assert (jobs[0].runs, jobs[0].failures) == (2, 0), jobs[0].last_error
    assert layer(lake, "forensic", "src.public.items").num_rows == forensic.num_rows

"""The reliability suite (DESIGN §3.3): kill -9 and SIGTERM at random moments, source
restarts, a poison event and a column added mid-run, each followed by `verify` and, for the
stops, a ledger check that the lake holds every committed change exactly once and a count
of every key's versions against the source's own history.

The default run is the short form (3 kills); `-m soak` runs the long form (12 kills).
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest

from tests.pipeline.reliability import (
    TABLES,
    Pipeline,
    SimulatorThread,
    lake_changes,
    ledger_changes,
    wait_streaming,
    write_config,
)
from tests.pipeline.truth_support import AUDIT, Versions, sql
from tidemark.config import load_config
from tidemark.connectors.postgres.cluster import LocalCluster
from tidemark.connectors.postgres.settings import replication_name
from tidemark.observe.report import Observer
from tidemark.simulator.errors import SimulatorError
from tidemark.simulator.runner import Simulator
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    root.chmod(0o755)
    cluster = LocalCluster(root / "cluster")
    url = cluster.start()
    yield cluster, url
    cluster.stop(mode="immediate")


def _database(cluster_url: tuple, name: str) -> str:
    cluster, url = cluster_url
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return cluster.url(name)


def _verify(config_path: Path, timeout: float = 120):
    config = load_config(config_path)
    report = verify_source(config, config.sources[0], timeout=timeout)
    problems = [t for t in report.tables if not t.ok]
    assert report.ok, problems
    return report


def _kill_story(
    cluster, tmp_path: Path, kills: int, name: str, write_mode: str = "copy_on_write"
) -> None:
    """The pipeline is stopped `kills` times at random moments while the simulator writes,
    by kill -9 and by SIGTERM in turn, and restarted each time. Then `verify` passes, the
    changelog holds every ledger change exactly once, and every key has as many forensic
    versions as the source's own history (an audit trigger) says it went through."""
    url = _database(cluster, name)
    Simulator(url, profile="bank").setup()
    sql(url, AUDIT, *[_audit_trigger(t) for t in TABLES])
    model = Versions()
    for table in TABLES:
        model.resnapshot(url, table)  # the first snapshot: the tables as they are now
    lake, ledger = tmp_path / "lake", tmp_path / "ledger.jsonl"
    config = write_config(
        tmp_path / "p.yaml", url=url, lake=lake, tables=TABLES, name=name, write_mode=write_mode
    )
    slot = replication_name(name, "bank")
    with Pipeline(config, tmp_path / "state", tmp_path / "run.log") as pipeline:
        pipeline.start()
        wait_streaming(url, slot, pipeline=pipeline)
        simulator = SimulatorThread(url, ledger, rate=300)
        simulator.start()
        rng = random.Random(kills)
        for stop in range(kills):
            time.sleep(rng.uniform(1.5, 5.0))  # the pipeline may be starting, idle, committing
            if stop % 2:
                # SIGTERM once it streams (its handler is set after the JVM starts; before,
                # the signal ends the process like kill -9, with nothing to commit)
                wait_streaming(url, slot, pipeline=pipeline)
                assert pipeline.terminate() == 0, pipeline.log.read_text()[-3000:]
            else:
                pipeline.kill()
            pipeline.start()
        time.sleep(3)
        simulator.finish()
        wait_streaming(url, slot, pipeline=pipeline)
        _verify(config)
        assert pipeline.terminate() == 0, pipeline.log.read_text()[-3000:]
    expected = ledger_changes(ledger)
    got = lake_changes(lake, TABLES)
    assert sum(expected.values()) > 500
    missing = expected - got
    extra = got - expected
    assert not missing and not extra, (list(missing.items())[:5], list(extra.items())[:5])
    assert pipeline.starts == kills + 1
    model.stream(url)
    for table in TABLES:
        want = {k: len(v) for (t, k), v in model.versions.items() if t == table}
        have = _version_counts(lake / "forensic" / f"bank.{table}")
        wrong = {
            k: (want.get(k), have.get(k))
            for k in set(want) | set(have)
            if want.get(k) != have.get(k)
        }
        assert not wrong, (table, list(wrong.items())[:5])
    if write_mode == "merge_on_read":  # updates really went in as deletion vectors
        from tidemark.sinks.delta.dv.log import LogState
        from tidemark.sinks.delta.dv.store import open_store

        live = LogState.load(open_store(str(lake / "live" / "bank.public.accounts")))
        assert any(entry.dv is not None for entry in live.files.values())


def _audit_trigger(table: str) -> str:
    name = table.split(".")[1]
    return (
        f"CREATE TRIGGER {name}_audit AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION audit.keep()"
    )


def _version_counts(forensic: Path) -> dict[str, int]:
    from deltalake import DeltaTable

    from tidemark.sinks.readers import read_table  # applies deletion vectors (merge-on-read)

    counts: dict[str, int] = {}
    for key in read_table(DeltaTable(str(forensic)), columns=["id"]).column("id").to_pylist():
        counts[str(key)] = counts.get(str(key), 0) + 1
    return counts


def test_kill_9_and_sigterm_three_times_lose_and_duplicate_nothing(cluster, tmp_path) -> None:
    _kill_story(cluster, tmp_path, kills=3, name="kill3")


@pytest.mark.slow  # long; the default run stays under 15 min
def test_kill_9_and_sigterm_three_times_in_merge_on_read(cluster, tmp_path) -> None:
    """The same story with live and forensic written as deletion vectors; `verify` reads
    them through DuckDB's delta extension."""
    _kill_story(cluster, tmp_path, kills=3, name="kill3mor", write_mode="merge_on_read")


@pytest.mark.soak
def test_kill_9_and_sigterm_twelve_times_lose_and_duplicate_nothing(cluster, tmp_path) -> None:
    _kill_story(cluster, tmp_path, kills=12, name="kill12")


def _bank_with_poison(cluster, tmp_path: Path, name: str) -> tuple[str, Path, Path, str]:
    url = _database(cluster, name)
    Simulator(url, profile="bank").setup()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE public.poison (id int PRIMARY KEY, n int)")
        cur.execute("INSERT INTO public.poison SELECT g, g FROM generate_series(1, 3) g")
    lake = tmp_path / "lake"
    config = write_config(
        tmp_path / "p.yaml", url=url, lake=lake, tables=[*TABLES, "public.poison"], name=name
    )
    checked = write_config(tmp_path / "checked.yaml", url=url, lake=lake, tables=TABLES, name=name)
    return url, config, checked, replication_name(name, "bank")


def test_poison_event_and_new_column(cluster, tmp_path) -> None:
    """Mid-run a captured table's column changes type so its events cannot be applied (dead
    letters, the other tables go on), and a column is added to another (the lake grows)."""
    url, config, checked, slot = _bank_with_poison(cluster, tmp_path, "faults")
    with Pipeline(config, tmp_path / "state", tmp_path / "run.log") as pipeline:
        pipeline.start()
        wait_streaming(url, slot, pipeline=pipeline)
        simulator = SimulatorThread(url, tmp_path / "ledger.jsonl", rate=200)
        simulator.start()
        time.sleep(4)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE public.poison ALTER COLUMN n TYPE text USING 'x' || n")
            cur.execute("UPDATE public.poison SET n = 'poison' WHERE id = 1")
            cur.execute("ALTER TABLE public.customers ADD COLUMN nickname text")
            cur.execute("UPDATE public.customers SET nickname = 'nick-' || id WHERE id % 3 = 0")
        time.sleep(4)
        simulator.finish()
        assert pipeline.alive(), pipeline.log.read_text()[-3000:]
        report = _verify(checked)
        customers = next(t for t in report.tables if t.table == "bank.public.customers")
        assert not any("nickname" in note for note in customers.notes)  # the lake has it
        status = Observer(load_config(config)).report()
        letters = {t.table: t.dead_letters for s in status.sources for t in s.tables}
        assert letters["bank.public.poison"] >= 1
        # its newest events went to the dead letters: the status page shows it failing
        assert status.table("bank.public.poison").state == "failing"
        assert status.table("bank.public.customers").state != "failing"
        assert pipeline.terminate() == 0


# Slow (about 23 s in CI; the default run stays under 15 min): a database restart retried
# and shown in status, the lake exact after it, stays in the default run
# (tests/test_stop_or_retry.py).
@pytest.mark.slow
def test_source_restart(cluster, tmp_path) -> None:
    """The source restarts mid-run: the pipeline retries with backoff and goes on, and the
    lake still equals the source with every event once."""
    pg, _ = cluster
    url, _, checked, slot = _bank_with_poison(cluster, tmp_path, "restart")
    with Pipeline(checked, tmp_path / "state", tmp_path / "run.log") as pipeline:
        pipeline.start()
        wait_streaming(url, slot, pipeline=pipeline)
        before = SimulatorThread(url, tmp_path / "ledger.jsonl", rate=200)
        before.start()
        time.sleep(4)
        restarted = datetime.now()
        pg.restart()  # Debezium retries (or the runner reopens the engine with backoff)
        before.finish(tolerate=SimulatorError)  # it may give up while the server is down
        simulator = SimulatorThread(url, tmp_path / "ledger.jsonl", rate=200)
        simulator.start()
        time.sleep(6)
        simulator.finish()
        assert pipeline.alive(), pipeline.log.read_text()[-3000:]
        wait_streaming(url, slot, pipeline=pipeline)
        _verify(checked)
        assert pipeline.terminate() == 0
        committed_after = [
            line
            for line in pipeline.log.read_text().splitlines()
            if " committed: " in line
            and datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S") > restarted
        ]
        # the same process went on after the restart (after a long reconnect backoff, what
        # was written meanwhile may arrive as a single batch)
        assert committed_after

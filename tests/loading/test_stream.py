"""A first start while the simulator writes: the parallel loader arms the bank tables, the
stream takes over exactly at each load's snapshot, and nothing is lost or applied twice.

The simulator writes (with a ledger of every committed row change) before, during and after
the loads. The pipeline starts fresh: its slot is created, each table gets a marker and an
exported snapshot and is copied in parallel ranges, then Debezium streams from the slot
without a snapshot of its own, and the gate drops the streamed changes each snapshot holds.
The ledger then says exactly what each table's changelog must hold: every change whose
transaction the table's snapshot does not see, once; none that it sees. Debezium starts up
while the tables load (the engine is opened on the slot before the first range is read), so
its stream fills its queue during the loads and the gate sorts that out too.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.loading.support import Running, config_for, execute, fetch, layer, new_database
from tidemark.connectors.postgres.exported import SnapshotPoint
from tidemark.connectors.postgres.setup import drop_slot
from tidemark.simulator.runner import Simulator
from tidemark.sinks.loads import LoadLog
from tidemark.verify import verify_source

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

TABLES = ["public.customers", "public.accounts", "public.transactions"]


def _simulate(url: str, ledger: Path, stop: threading.Event, errors: list) -> threading.Thread:
    sim = Simulator(url, profile="bank", workers=2, rate=400, ledger=ledger)

    def body() -> None:
        try:
            sim.run(stop)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def _until_each_table_changed(ledger: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = ledger.read_text().split("\n")[:-1] if ledger.exists() else []  # whole lines
        if {json.loads(line)["table"] for line in lines} >= set(TABLES):
            return
        time.sleep(0.2)
    raise AssertionError("the simulator changed not every table")


def _slot_active(url: str, slot: str, timeout: float = 60) -> bool:
    """Whether a client streams from `slot` (Debezium connects in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = fetch(url, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
        if rows and rows[0][0]:
            return True
        time.sleep(0.2)
    return False


def test_a_table_loaded_while_written_streams_on_without_gap_or_double(postgres, tmp_path):
    url = new_database(postgres.url, postgres.url_for)
    seed = Simulator(url, profile="bank", workers=2, max_changes=30_000)
    seed.setup()
    seed.run()
    execute(url, "CREATE TABLE public.tm_sync (id int PRIMARY KEY)")
    ledger = tmp_path / "ledger.jsonl"
    stop, errors = threading.Event(), []
    writer = _simulate(url, ledger, stop, errors)
    _until_each_table_changed(ledger)  # so each snapshot holds some of the ledger's changes
    config = config_for(
        url,
        tmp_path / "lake",
        [*TABLES, "public.tm_sync"],
        snapshot={"*": {"rows_per_range": 2000, "max_workers": 2}},
    )
    slot = f"tidemark_{config.pipeline}_src"
    streaming_while_loading: list[bool] = []
    run = Running(
        config,
        tmp_path / "state",
        # told as each table's load ends: the engine, opened before the first, streams
        load_done=lambda _: streaming_while_loading.append(_slot_active(url, slot)),
    )
    try:
        assert streaming_while_loading == [True] * (len(TABLES) + 1)  # and tm_sync's
        run.wait_streaming()
        threading.Event().wait(3)  # more changes after the hand-over
        stop.set()
        writer.join(60)
        assert not errors, errors
        run.wait_for(url, "tm_sync", 1)
    finally:
        run.stop()
        drop_slot(url, slot)
    report = verify_source(config, config.sources[0], timeout=10)
    assert report.ok, [t for t in report.tables if not t.ok]

    states = LoadLog(config.lake, app_id=config.app_id).latest()
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    for table in TABLES:
        state = states[f"src.{table}"]
        assert state.status == "done" and len(state.points) == 1
        assert len(state.ranges) > 1, "the table was read in parallel ranges"
        point = SnapshotPoint.from_json(state.points[0])
        mine = [e for e in entries if e["table"] == table]
        tx = pa.array([str(e["tx"]) for e in mine], pa.string())
        seen = point.visible(tx).to_pylist() if mine else []
        wanted = collections.Counter(
            (e["key"]["id"], e["op"], str(e["tx"]))
            for e, held in zip(mine, seen, strict=True)
            if not held
        )
        lake = collections.Counter(
            (r["id"], r["_tm_op"], r["_tm_tx_id"])
            for r in layer(Path(config.lake), "changelog", f"src.{table}").to_pylist()
            if r["_tm_op"] != "r"
        )
        assert sum(held for held in seen) > 0, f"{table}: no change fell inside the load"
        assert sum(wanted.values()) > 0, f"{table}: no change came after the load"
        assert lake == wanted, (table, lake - wanted, wanted - lake)

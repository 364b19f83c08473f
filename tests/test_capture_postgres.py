"""Real Postgres + real embedded Debezium: snapshot, streaming, transactions, offsets."""

from __future__ import annotations

import gc
import time

import psycopg2
import pytest

from tests.fixtures.debezium import changes, payload
from tidemark.connectors.errors import SourceError
from tidemark.connectors.postgres.capture import request_snapshot, signal_table_name
from tidemark.kernel.records import RawRecord

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


def run(url: str, *statements: str) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def ends(records: list[RawRecord]) -> int:
    return sum(
        r.destination == "src.transaction" and payload(r)["status"] == "END" for r in records
    )


def ops(records: list[RawRecord], table: str) -> list[str]:
    return [p["op"] for p in changes(records, table)]


def test_snapshot_then_stream_with_before_images(fresh_database, capture_factory):
    url = fresh_database()
    run(
        url,
        "CREATE TABLE public.keyed (id int PRIMARY KEY, name text, born date)",
        "CREATE TABLE public.full_rows (code text, qty int)",
        "ALTER TABLE public.full_rows REPLICA IDENTITY FULL",
        "INSERT INTO keyed VALUES (1, 'ann', '1990-05-01'), (2, 'bob', NULL)",
        "INSERT INTO full_rows VALUES ('a', 1), ('b', 2)",
    )
    cap = capture_factory(url, ["public.keyed", "public.full_rows"])

    # story 1: the initial snapshot reads every row with op r
    cap.collect(lambda rs: len(changes(rs)) >= 4)
    assert ops(cap.records, "keyed") == ["r", "r"]
    assert ops(cap.records, "full_rows") == ["r", "r"]
    snap = {p["after"]["id"]: p["after"] for p in changes(cap.records, "keyed")}
    assert snap[2]["born"] is None  # NULL stays NULL

    # story 2: streaming insert, update, delete in one transaction per table
    run(
        url,
        "BEGIN; INSERT INTO keyed VALUES (3, 'cy', '2001-01-01');"
        " UPDATE keyed SET name = 'anna' WHERE id = 1; DELETE FROM keyed WHERE id = 2; COMMIT",
        "BEGIN; INSERT INTO full_rows VALUES ('c', 3); UPDATE full_rows SET qty = 10"
        " WHERE code = 'a'; DELETE FROM full_rows WHERE code = 'b'; COMMIT",
    )
    cap.collect(lambda rs: len(changes(rs)) >= 10 and ends(rs) >= 2)
    keyed = changes(cap.records, "keyed")[2:]
    full = changes(cap.records, "full_rows")[2:]
    assert [p["op"] for p in keyed] == ["c", "u", "d"]
    assert [p["op"] for p in full] == ["c", "u", "d"]

    # default identity with a key: updates carry no before image, deletes only the key
    assert keyed[1]["after"] == {"id": 1, "name": "anna", "born": snap[1]["born"]}
    assert keyed[1]["before"] is None
    assert keyed[2]["before"] == {"id": 2, "name": None, "born": None}  # not 1970: no defaults
    assert keyed[2]["after"] is None

    # REPLICA IDENTITY FULL: whole before images
    assert full[1]["before"] == {"code": "a", "qty": 1}
    assert full[1]["after"] == {"code": "a", "qty": 10}
    assert full[2]["before"] == {"code": "b", "qty": 2}

    # transaction metadata: BEGIN/END markers; events share source.txId (not transaction.id)
    tx_ids = {p["source"]["txId"] for p in keyed}
    assert len(tx_ids) == 1
    markers = [payload(r) for r in cap.records if r.destination == "src.transaction"]
    assert [m["status"] for m in markers] == ["BEGIN", "END", "BEGIN", "END"]
    assert markers[1]["event_count"] == 3


def test_large_transaction_arrives_complete(fresh_database, capture_factory):
    url = fresh_database()
    run(url, "CREATE TABLE public.big (id int PRIMARY KEY, pad text)")
    cap = capture_factory(url, ["public.big"])
    cap.collect(lambda rs: any(r.destination.startswith("__debezium-heartbeat") for r in rs))
    run(url, "INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, 10000) g")

    def ended(records: list[RawRecord]) -> bool:
        return any(
            r.destination == "src.transaction" and payload(r)["status"] == "END" for r in records
        )

    cap.collect(ended, timeout=120)
    names = [r.destination for r in cap.records]
    begin = next(i for i, r in enumerate(cap.records) if r.destination == "src.transaction")
    end = max(i for i, n in enumerate(names) if n == "src.transaction")
    inside = changes(cap.records[begin + 1 : end], "big")
    assert payload(cap.records[begin])["status"] == "BEGIN"
    assert payload(cap.records[end])["event_count"] == 10_000
    assert sorted(p["after"]["id"] for p in inside) == list(range(1, 10_001))
    assert {p["op"] for p in inside} == {"c"}
    assert len({p["source"]["txId"] for p in inside}) == 1


def test_offsets_advance_only_on_acknowledgement(fresh_database, capture_factory, tmp_path):
    url = fresh_database()
    run(
        url,
        "CREATE TABLE public.t (id int PRIMARY KEY)",
        "INSERT INTO t SELECT generate_series(1, 50)",
    )
    state = tmp_path / "state"
    first = capture_factory(url, ["public.t"], pipeline="acks", state=state)
    first.collect(lambda rs: len(changes(rs)) >= 50, ack=False)
    with pytest.raises(SourceError, match="cannot acknowledge a record from `kafka:t/0@1`"):
        first.engine.acknowledge(RawRecord("src.public.t", None, None, "kafka:t/0@1"))
    first.engine.close()
    with pytest.raises(SourceError, match="is closed"):
        first.engine.acknowledge(first.records[-1])

    # nothing acknowledged: the snapshot is delivered again
    second = capture_factory(url, ["public.t"], pipeline="acks", state=state)
    second.collect(lambda rs: len(changes(rs)) >= 50)
    assert sorted(p["after"]["id"] for p in changes(second.records)) == list(range(1, 51))
    run(url, "INSERT INTO t VALUES (51)")
    second.collect(lambda rs: len(changes(rs)) >= 51)
    second.engine.close()

    # all acknowledged: a restart streams only what is new
    run(url, "INSERT INTO t VALUES (52)")
    third = capture_factory(url, ["public.t"], pipeline="acks", state=state)
    third.collect(lambda rs: len(changes(rs)) >= 1)
    assert [p["after"]["id"] for p in changes(third.records)] == [52]


def test_acknowledging_inside_a_transaction_loses_nothing_after_it(
    fresh_database, capture_factory, tmp_path
):
    """The bridge keeps offsets only at COMMITs and chunk ends; an acknowledgement between
    them must fall back to an earlier one (redelivery), never skip ahead (loss)."""
    url = fresh_database()
    run(url, "CREATE TABLE public.t (id int PRIMARY KEY)")
    state = tmp_path / "state"
    first = capture_factory(url, ["public.t"], pipeline="mid", state=state)
    first.collect(lambda rs: any(r.destination.startswith("__debezium-heartbeat") for r in rs))
    run(url, *(f"INSERT INTO t SELECT generate_series({n}, {n + 4})" for n in (1, 6, 11)))
    first.collect(lambda rs: ends(rs) >= 3, ack=False)
    rows = [r for r in first.records if r.destination == "src.public.t"]
    assert [payload(r)["after"]["id"] for r in rows] == list(range(1, 16))
    first.engine.acknowledge(rows[7])  # id 8: the third change of the second transaction
    first.engine.close()

    second = capture_factory(url, ["public.t"], pipeline="mid", state=state)
    second.collect(lambda rs: ends(rs) >= 2)
    again = [p["after"]["id"] for p in changes(second.records, "t")]
    assert set(range(9, 16)) <= set(again)  # everything after the acknowledged record
    assert not set(range(1, 6)) & set(again)  # the transaction committed before it stays done


def test_java_collections_leave_python_collections_alone(fresh_database, capture_factory):
    """JPype runs a full Python collection after each Java one unless unhooked (jvm.py):
    a quarter of a core in a backlog."""
    import jpype

    url = fresh_database()
    run(url, "CREATE TABLE public.t (id int PRIMARY KEY)")
    capture_factory(url, ["public.t"])  # the JVM is up
    full: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(count)
    try:
        for _ in range(5):
            jpype.java.lang.System.gc()
            time.sleep(0.4)
    finally:
        gc.callbacks.remove(count)
    assert len(full) <= 1  # JPype's last trigger (see _unhook_python_gc); hooked it was 6


def test_table_snapshotted_through_a_signal_while_streaming(
    fresh_database, capture_factory, tmp_path
):
    """A table added to a running capture is read through Debezium's signal table (in
    Tidemark's own schema), in chunks, while the other table streams on. (Which tables a
    pipeline asks for is the lake's decision: tests/pipeline/test_positions.py.)"""
    url = fresh_database()
    run(
        url,
        "CREATE TABLE public.old (id int PRIMARY KEY)",
        "INSERT INTO old SELECT generate_series(1, 20)",
        "CREATE TABLE public.added (id int PRIMARY KEY, v text)",
        "INSERT INTO added SELECT g, 'v' || g FROM generate_series(1, 30) g",
    )
    state = tmp_path / "state"
    first = capture_factory(url, ["public.old"], pipeline="grow", state=state)
    first.collect(lambda rs: len(changes(rs)) >= 20)
    first.engine.close()

    second = capture_factory(url, ["public.old", "public.added"], pipeline="grow", state=state)
    signals = signal_table_name("grow", "src")
    assert signals.startswith("_tidemark.")
    request_snapshot(url, signals, ["public.added"])
    run(url, "INSERT INTO old VALUES (21)")
    second.collect(
        lambda rs: len(changes(rs, "added")) >= 30 and len(changes(rs, "old")) >= 1, timeout=90
    )
    added = changes(second.records, "added")
    assert sorted(p["after"]["id"] for p in added) == list(range(1, 31))
    assert {p["op"] for p in added} == {"r"}
    assert [(p["op"], p["after"]["id"]) for p in changes(second.records, "old")] == [("c", 21)]


def grew_by_one(count: int):
    return lambda records: len(records) > count


def slot_flushed(url: str, slot: str) -> int:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (slot,),
        )
        value = int(cur.fetchone()[0])
    conn.close()
    return value


def test_idle_database_slot_advances_with_acknowledged_heartbeats(fresh_database, capture_factory):
    url, busy = fresh_database(), fresh_database()
    run(url, "CREATE TABLE public.quiet (id int PRIMARY KEY)")
    cap = capture_factory(url, ["public.quiet"], heartbeat_ms=300)
    slot = f"tidemark_{cap.pipeline}_src"
    cap.collect(lambda rs: any(r.destination.startswith("__debezium-heartbeat") for r in rs))
    before = slot_flushed(url, slot)
    # WAL written elsewhere in the cluster: the captured database stays idle
    run(busy, "CREATE TABLE noise (id int)", "INSERT INTO noise SELECT generate_series(1, 5000)")
    seen = len(cap.records)
    cap.collect(
        lambda rs: sum(r.destination.startswith("__debezium-heartbeat") for r in rs[seen:]) >= 3,
        timeout=30,
    )
    deadline = time.monotonic() + 20
    while slot_flushed(url, slot) <= before and time.monotonic() < deadline:
        cap.collect(grew_by_one(len(cap.records)), timeout=10)
    assert slot_flushed(url, slot) > before
    assert changes(cap.records) == []

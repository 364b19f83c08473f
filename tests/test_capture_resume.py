"""Restart after acknowledging a commit while another transaction is in flight (real engine).

Debezium stores, with the offset of a transaction's END marker (or a heartbeat after it),
`lsn_proc` = the END's LSN, which is the end of the commit record: the LSN where the next
WAL record starts. When that record is a change of a transaction still in flight, Debezium's
restart search (`WalPositionLocator`) takes it for "the last event already processed" and
skips it and every earlier change of that transaction. The bridge stores such offsets
without `lsn_proc`, so Debezium resumes at the commit and replays whole transactions.
"""

from __future__ import annotations

import psycopg2
import pytest

from tests.fixtures.debezium import changes, payload
from tidemark.kernel.records import RawRecord

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]


def _ended(tx_id: str):
    def check(records: list[RawRecord]) -> bool:
        return any(
            r.destination == "src.transaction"
            and payload(r)["status"] == "END"
            and str(payload(r)["id"]).split(":")[0] == tx_id
            for r in records
        )

    return check


def _lsn(cur) -> int:
    cur.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    return int(cur.fetchone()[0])


def test_restart_after_a_commit_keeps_the_transaction_in_flight_whole(
    fresh_database, capture_factory, tmp_path
):
    url = fresh_database()
    setup = psycopg2.connect(url)
    setup.autocommit = True
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    state = tmp_path / "state"
    first = capture_factory(url, ["public.t"], pipeline="resume", state=state)
    first.collect(lambda rs: any(r.destination.startswith("__debezium-heartbeat") for r in rs))

    in_flight = psycopg2.connect(url)  # transaction U: begins first, commits last
    committed = psycopg2.connect(url)  # transaction T: commits while U is open
    committed.autocommit = True
    with in_flight.cursor() as u, committed.cursor() as t:
        u.execute("INSERT INTO t VALUES (1)")
        u.execute("SELECT txid_current()::text")
        u_tx = u.fetchone()[0]
        t.execute("INSERT INTO t VALUES (100) RETURNING txid_current()::text")
        t_tx = t.fetchone()[0]
        t_end = _lsn(t)
        # U's next change starts where T's commit record ends (nothing else writes WAL here)
        u.execute("INSERT INTO t VALUES (2)")
    # the runner acknowledges T's END marker (and heartbeats after it) once T is in the lake
    first.collect(_ended(t_tx))
    tail = changes(first.records, "t")
    assert [p["after"]["id"] for p in tail] == [100]
    first.engine.close()  # kill -9 after the acknowledgement

    in_flight.commit()
    second = capture_factory(url, ["public.t"], pipeline="resume", state=state)
    second.collect(_ended(u_tx))
    got = changes(second.records, "t")
    lsns = {p["after"]["id"]: int(p["source"]["lsn"]) for p in got}
    assert [p["after"]["id"] for p in got] == [1, 2], (t_end, lsns)
    # the case this test is about: U's second change starts where T's commit ended
    assert lsns[2] == t_end, (t_end, lsns)
    in_flight.close()
    committed.close()
    setup.close()


def test_a_torn_offsets_file_does_not_snapshot_again(fresh_database, capture_factory, tmp_path):
    """Kafka's file offset store truncates `offsets.dat` before rewriting it: a kill -9 in
    between leaves it empty. The engine restores the copy kept after each acknowledgement,
    so it resumes streaming instead of snapshotting every table again."""
    url = fresh_database()
    setup = psycopg2.connect(url)
    setup.autocommit = True
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
        cur.execute("INSERT INTO t SELECT g FROM generate_series(1, 20) g")
    state = tmp_path / "state"
    first = capture_factory(url, ["public.t"], pipeline="torn", state=state)
    first.collect(
        lambda rs: (
            len(changes(rs, "t")) == 20
            and any(r.destination.startswith("__debezium-heartbeat") for r in rs)
        )
    )
    assert {c["op"] for c in changes(first.records, "t")} == {"r"}
    first.engine.close()
    first.engine.offsets_file.write_bytes(b"")  # what the kill left

    second = capture_factory(url, ["public.t"], pipeline="torn", state=state)
    second.collect(lambda rs: any(r.destination.startswith("__debezium-heartbeat") for r in rs))
    with setup.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (21)")
    second.collect(lambda rs: len(changes(rs, "t")) >= 1)
    assert [(c["op"], c["after"]["id"]) for c in changes(second.records, "t")] == [("c", 21)]

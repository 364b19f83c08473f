"""The simulator against a real Postgres: exact counts, a truthful ledger, invariants, seeds.

"What was committed" comes from Postgres itself (a test_decoding replication slot), not from
the simulator's own accounting.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime

import pytest

from tests.simulator_support import (
    BALANCE_MISMATCHES,
    decoded_changes,
    ledger_keys,
    query,
    read_ledger,
)
from tidemark.simulator import Simulator

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("profile", ["customers", "bank", "retail"])
def test_max_changes_is_exact_and_the_ledger_matches_the_wal(profile, fresh_database, tmp_path):
    url = fresh_database()
    ledger = tmp_path / "ledger.jsonl"
    sim = Simulator(url, profile=profile, workers=4, max_changes=2000, ledger=ledger, seed=7)
    sim.setup()
    with decoded_changes(url) as committed:
        summary = sim.run()
    lines = read_ledger(ledger)
    assert summary.total == 2000
    assert len(committed) == 2000  # Postgres agrees: exactly N row changes committed
    assert ledger_keys(lines) == Counter((t, k, op, tx) for t, k, op, tx, _ in committed)
    by_op = Counter((t.split(".")[1], op) for t, _, op, _, _ in committed)
    assert {(t, op): n for t, ops in summary.counts.items() for op, n in ops.items()} == by_op
    assert {op for _, op in by_op} == {"c", "u", "d"}
    # commit_ts: UTC with microseconds, taken inside the transaction just before COMMIT
    real = {
        tx: datetime.fromisoformat(ts + ("00" if ts.endswith("+00") else ""))
        for _, _, _, tx, ts in committed
    }
    for line in lines[:200]:
        ts = datetime.fromisoformat(line["commit_ts"])
        assert line["commit_ts"].endswith("+00:00") and "." in line["commit_ts"]
        assert 0 <= (real[line["tx"]] - ts).total_seconds() < 1.0


def test_bank_invariants_hold_after_a_concurrent_run(fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile="bank", workers=4, max_changes=4000, tx_size=14)
    sim.setup()
    summary = sim.run()
    assert summary.total == 4000
    assert query(url, BALANCE_MISMATCHES) == [(0,)]
    # the FKs are declared, so Postgres enforces them; check they exist and hold
    orphans = """SELECT count(*) FROM transactions t
                 LEFT JOIN accounts a ON a.id = t.account_id WHERE a.id IS NULL"""
    assert query(url, orphans) == [(0,)]
    fks = query(
        url,
        "SELECT conname FROM pg_constraint WHERE contype = 'f' "
        "AND connamespace = 'public'::regnamespace ORDER BY 1",
    )
    assert [f for (f,) in fks] == [
        "fk_accounts_customer_id",
        "fk_addresses_customer_id",
        "fk_transactions_account_id",
    ]
    counts = query(
        url, "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transactions)"
    )
    assert counts[0][0] > 0 and counts[0][1] > 0


def test_retail_invariants_hold_after_a_concurrent_run(fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile="retail", workers=4, max_changes=3000)
    sim.setup()
    assert sim.run().total == 3000
    # a voucher used by a payment is redeemed, and every sale has its lines
    assert query(
        url,
        """SELECT count(*) FROM payments p JOIN vouchers v ON v.id = p.voucher_id
                         WHERE NOT v.redeemed""",
    ) == [(0,)]
    assert query(
        url,
        """SELECT count(*) FROM sales s WHERE NOT EXISTS
                         (SELECT 1 FROM sale_items i WHERE i.sale_id = s.id)""",
    ) == [(0,)]
    assert query(url, "SELECT count(*) FROM stores") == [(25,)]


def _snapshot(url: str) -> list:
    return query(
        url,
        """
        SELECT c.relname, c.relkind, c.oid::bigint, c.xmin::text,
               (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' ORDER BY 1""",
    )


@pytest.mark.parametrize("profile", ["bank", "retail"])
def test_setup_twice_changes_nothing(profile, fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile=profile)
    sim.setup()
    before = _snapshot(url)
    with decoded_changes(url) as committed:
        sim.setup()
    assert committed == []  # not a single row written
    assert _snapshot(url) == before  # no table, index or constraint recreated


def test_schema_has_keys_money_and_modified_at(fresh_database):
    url = fresh_database()
    Simulator(url, profile="bank").setup()
    cols = dict(
        ((t, c), (d, p, s))
        for t, c, d, p, s in query(
            url,
            """
        SELECT table_name, column_name, data_type, numeric_precision, numeric_scale
        FROM information_schema.columns WHERE table_schema = 'public'""",
        )
    )
    for table in ("customers", "addresses", "accounts", "transactions"):
        assert cols[(table, "id")][0] == "bigint"
        assert cols[(table, "modified_at")][0] == "timestamp with time zone"
    assert cols[("accounts", "balance")] == ("numeric", 18, 2)
    pks = query(
        url,
        "SELECT count(*) FROM pg_constraint WHERE contype = 'p' "
        "AND connamespace = 'public'::regnamespace",
    )
    assert pks == [(4,)]


def _run_seeded(url: str, seed: int, profile: str, tmp_path, name: str):
    ledger = tmp_path / name
    sim = Simulator(url, profile=profile, workers=1, max_changes=800, seed=seed, ledger=ledger)
    sim.setup()
    sim.run()
    return [(x["table"], x["key"]["id"], x["op"]) for x in read_ledger(ledger)]


@pytest.mark.parametrize("profile", ["customers", "bank"])
def test_same_seed_one_worker_same_operations(profile, fresh_database, tmp_path):
    url_a, url_b, url_c = fresh_database(), fresh_database(), fresh_database()
    a = _run_seeded(url_a, 42, profile, tmp_path, "a.jsonl")
    b = _run_seeded(url_b, 42, profile, tmp_path, "b.jsonl")
    c = _run_seeded(url_c, 43, profile, tmp_path, "c.jsonl")
    assert a == b
    assert a != c
    table = "transactions" if profile == "bank" else "addresses"
    cols = (
        "account_id, amount, txn_type, merchant, status"
        if profile == "bank"
        else "customer_id, address_type, line1, line2, city, postal_code"
    )
    data = f"SELECT id, {cols} FROM {table} ORDER BY id"
    assert query(url_a, data) == query(url_b, data)


def test_values_are_realistic(fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile="customers", max_changes=1500, seed=3)
    sim.setup()
    sim.run()
    nulls, non_ascii, emails = query(
        url,
        """
        SELECT count(*) FILTER (WHERE phone IS NULL),
               count(*) FILTER (WHERE first_name || last_name ~ '[^\\x01-\\x7f]'),
               count(*) FILTER (WHERE email LIKE '%@%.%')
        FROM customers""",
    )[0]
    assert nulls > 0 and non_ascii > 0 and emails > 0


def test_library_run_stops_on_event_and_reports_progress(fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile="customers", workers=2, rate=2000)
    sim.setup()
    stop, seen = threading.Event(), []

    def on_progress(p):
        seen.append(p)
        if p.committed > 300:
            stop.set()

    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "s", sim.run(stop, on_progress=on_progress, progress_interval=0.1)
        )
    )
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    summary = result["s"]
    assert summary.total >= 300 and seen
    assert query(url, "SELECT count(*) FROM customers")[0][0] == summary.counts["customers"][
        "c"
    ] - summary.counts["customers"].get("d", 0)


def test_rate_limit_and_duration(fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile="customers", rate=400, duration=1.5)
    sim.setup()
    summary = sim.run()
    # a ceiling only (a busy machine may be slower): 1.5 s at 400/s plus one burst window
    assert 0 < summary.total <= 400 * 1.5 + 100 + 20


def test_mix_and_uniform_skew(fresh_database):
    url = fresh_database()
    sim = Simulator(url, profile="customers", max_changes=300, mix={"insert": 1.0})
    sim.setup()
    assert {op for ops in sim.run().counts.values() for op in ops} == {"c"}
    sim = Simulator(
        url,
        profile="customers",
        max_changes=100,
        skew="uniform",
        mix={"update": 1.0, "delete": 1.0},
    )
    counts = sim.run().counts
    assert {op for ops in counts.values() for op in ops} == {"u", "d"}
    assert sum(n for ops in counts.values() for n in ops.values()) == 100


@pytest.mark.parametrize("skew, low, high", [("recent", 0.7, 1.0), ("uniform", 0.0, 0.5)])
def test_key_skew(skew, low, high, fresh_database, tmp_path):
    url = fresh_database()
    sim = Simulator(url, profile="customers", max_changes=800, seed=1)
    sim.setup()
    sim.run()  # some data first
    ledger = tmp_path / "l.jsonl"
    Simulator(
        url,
        profile="customers",
        max_changes=600,
        seed=2,
        skew=skew,
        ledger=ledger,
        mix={"update": 1.0},
    ).run()
    top = query(url, "SELECT max(id) FROM customers")[0][0]
    hits = [x["key"]["id"] for x in read_ledger(ledger) if x["table"] == "public.customers"]
    share = sum(k > 0.75 * top for k in hits) / len(hits)  # updates in the newest quarter
    assert low <= share <= high, share

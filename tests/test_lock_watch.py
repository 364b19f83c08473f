"""The test cluster's lock watch: a statement stuck on a lock fails, naming who holds it."""

from __future__ import annotations

import time

import psycopg2
import pytest

from tests.fixtures.lockwatch import LockWatch


def test_a_statement_waiting_on_a_lock_is_cancelled_and_its_blocker_named(fresh_database):
    url = fresh_database()
    holder = psycopg2.connect(url)
    waiter = psycopg2.connect(url)
    waiter.autocommit = True
    watch = LockWatch(url, report_after=1, cancel_after=3).start()
    try:
        with holder.cursor() as cur:
            cur.execute("CREATE TABLE held (id int)")
            holder.commit()
            cur.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(psycopg2.errors.QueryCanceled), waiter.cursor() as cur:
            cur.execute("SELECT count(*) FROM held")
        assert time.monotonic() - started < 30
        (seen,) = watch.seen.values()
        assert "SELECT count(*) FROM held" in seen
        assert "LOCK TABLE held IN ACCESS EXCLUSIVE MODE" in seen  # the blocker's last query
        assert "idle in transaction" in seen and seen.endswith("-> cancelled")
    finally:
        watch.stop()
        holder.close()
        waiter.close()

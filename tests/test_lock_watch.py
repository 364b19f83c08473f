"""The test cluster's lock watch: a statement stuck on a lock fails, naming who holds it."""

from __future__ import annotations

import re
import time

import psycopg2
import pytest

from tests.fixtures.lockwatch import LockWatch


def test_a_statement_waiting_on_a_lock_is_cancelled_and_its_blocker_named(fresh_database):
    url = fresh_database()
    holder = psycopg2.connect(url)
    waiter = psycopg2.connect(url)
    waiter.autocommit = True
    watch = LockWatch(url, report_after=1, cancel_after=3, every=0.5).start()
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


def test_a_wait_is_timed_from_when_it_began_not_from_its_statements_start(fresh_database):
    url = fresh_database()
    holder = psycopg2.connect(url)
    waiter = psycopg2.connect(url)
    waiter.autocommit = True
    watch = LockWatch(url, report_after=1, cancel_after=2, every=0.5).start()
    try:
        with holder.cursor() as cur:
            cur.execute("CREATE TABLE held (id int)")
            holder.commit()
            cur.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg2.errors.QueryCanceled), waiter.cursor() as cur:
            # 4 s of work, then the wait: cancelled 2 s into the wait, not at once
            cur.execute("DO $$ BEGIN PERFORM pg_sleep(4); PERFORM count(*) FROM held; END $$")
        (seen,) = watch.seen.values()
        waited = int(re.search(r"waited (\d+) s", seen).group(1))
        assert 2 <= waited < 4, seen
    finally:
        watch.stop()
        holder.close()
        waiter.close()

"""Helpers for the simulator tests: what Postgres itself says was committed.

A logical replication slot with `test_decoding` (created before a run) lists every committed
row change with its transaction id and commit time, independently of the simulator's own
accounting; the tests compare the simulator's ledger and summary with it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import psycopg2

_CHANGE = re.compile(r"^table (\S+): (INSERT|UPDATE|DELETE): id\[bigint\]:(\d+)")
_COMMIT = re.compile(r"^COMMIT (\d+)(?: \(at (.+)\))?")
OPS = {"INSERT": "c", "UPDATE": "u", "DELETE": "d"}


@contextmanager
def decoded_changes(url: str):
    """Yield a list that, on exit, holds `(table, id, op, xid, commit_ts_text)` per row change."""
    slot = f"sim_{uuid.uuid4().hex[:10]}"
    _sql(url, "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", slot)
    found: list[tuple[str, int, str, int, str]] = []
    try:
        yield found
        rows = _sql(
            url,
            "SELECT xid::text::bigint, data FROM pg_logical_slot_get_changes("
            "%s, NULL, NULL, 'include-timestamp', 'on')",
            slot,
        )
        pending: list[tuple[str, int, str, int]] = []
        for xid, data in rows:
            m = _CHANGE.match(data)
            if m:
                pending.append((m.group(1), int(m.group(3)), OPS[m.group(2)], int(xid)))
                continue
            c = _COMMIT.match(data)
            if c:
                found.extend((*p, c.group(2) or "") for p in pending)
                pending = []
    finally:
        _sql(url, "SELECT pg_drop_replication_slot(%s)", slot)


def _sql(url: str, sql: str, *params):
    """Run one statement on a new connection (the server may have restarted meanwhile)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def read_ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ledger_keys(lines: list[dict]) -> Counter:
    return Counter((x["table"], x["key"]["id"], x["op"], x["tx"]) for x in lines)


def query(url: str, sql: str):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


BALANCE_MISMATCHES = """
SELECT count(*) FROM accounts a
WHERE a.balance <> COALESCE((SELECT sum(t.amount) FROM transactions t
                             WHERE t.account_id = a.id), 0)
"""

"""One worker: a connection running simulated transactions until told to stop.

Each transaction reserves row changes from the shared `Budget`, runs a few weighted
operations, commits, and only then counts its changes and writes them to the ledger.
Serialization failures, deadlocks and lost FK races roll the whole transaction back and try
again; nothing is ever half applied. A lost connection is re-opened; when it broke during
COMMIT and the ledger knows the transaction id, the transaction's fate is asked of Postgres.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tidemark.simulator.connect import Target, connect
from tidemark.simulator.engine import Budget, Change, KeySpace, Tx
from tidemark.simulator.errors import DatabaseRefused, DatabaseUnavailable, first_line
from tidemark.simulator.ledger import Ledger
from tidemark.simulator.profiles.base import Operation, Profile
from tidemark.simulator.values import Pools

log = logging.getLogger(__name__)
RECONNECT_TIMEOUT = 60.0
OPS_PER_TX = 8


class _Stopped(Exception):
    """Asked to stop while the database was unreachable: leave quietly."""


class RateLimiter:
    """A shared token bucket: `acquire(n)` blocks until `n` changes fit the rate."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, n: int, stop: threading.Event) -> None:
        if not self.rate or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - 0.2)  # at most 0.2 s of burst after an idle spell
            self._next = start + n / self.rate
        if start > now:
            stop.wait(start - now)

    def refund(self, n: int) -> None:
        if self.rate and n > 0:
            with self._lock:
                self._next -= n / self.rate


class Stats:
    """Counts shared by the workers: changes by (table, op), transactions, retries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changes: Counter[tuple[str, str]] = Counter()
        self.transactions = 0
        self.retries = 0
        self.reconnects = 0

    def add(self, changes: list[Change]) -> None:
        with self.lock:
            self.changes.update((c.table, c.op) for c in changes)
            self.transactions += 1


class Worker:
    """Runs transactions on its own connection; see the module docstring."""

    def __init__(
        self,
        index: int,
        *,
        target: Target,
        profile: Profile,
        pools: Pools,
        rng: random.Random,
        keys: KeySpace,
        budget: Budget,
        limiter: RateLimiter,
        stats: Stats,
        ledger: Ledger | None,
        stop: threading.Event,
        choose: Callable[[random.Random], Operation],
        tx_size: int,
    ) -> None:
        self.index = index
        self.target = target
        self.dialect = target.dialect
        self.profile = profile
        self.tables = {t.name: t for t in profile.tables}
        self.pools = pools
        self.rng = rng
        self.keys = keys
        self.budget = budget
        self.limiter = limiter
        self.stats = stats
        self.ledger = ledger
        self.stop = stop
        self.choose = choose
        self.tx_size = tx_size
        self.error: BaseException | None = None
        self._conn: Any = None
        self._commit_time_sql: str | None = None

    def run(self) -> None:
        """Thread body: never raises; a fatal error is kept in `self.error` for the runner."""
        try:
            self._connect()
            while not self.stop.is_set():
                want = self.rng.randint(max(1, self.tx_size // 2), max(1, self.tx_size * 3 // 2))
                granted = self.budget.reserve(want)
                if granted == 0:
                    if self.budget.exhausted:
                        return
                    time.sleep(0.002)  # others hold the rest; they may give some back
                    continue
                self.limiter.acquire(granted, self.stop)
                used = self._transaction(granted)
                self.limiter.refund(granted - used)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the runner, which stops the others
            self.error = exc
            self.stop.set()
        finally:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass

    def _connect(self) -> None:
        self._conn = connect(self.target)
        self.dialect.worker_session(self._conn)
        if self.ledger is not None:
            self._commit_time_sql = self.dialect.commit_time_sql(self._conn)

    def _exact_commit_time(self, xid: int) -> datetime | None:
        """The server's own commit time of `xid` (None when it does not keep one)."""
        if self._commit_time_sql is None:
            return None
        value: datetime | None = self.dialect.run_alone(
            self._conn, self._commit_time_sql, (str(xid),)
        )[0]
        return value

    def _transaction(self, granted: int) -> int:
        """Run one transaction to commit (retrying conflicts); returns changes committed."""
        while True:
            info: tuple[int, datetime] | None = None
            tx: Tx | None = None
            committing = False
            try:
                tx = Tx(
                    self._conn.cursor(),
                    self.dialect,
                    self.tables,
                    rng=self.rng,
                    pools=self.pools,
                    keys=self.keys,
                    budget=granted,
                )
                for _ in range(OPS_PER_TX):
                    if tx.remaining <= 0:
                        break
                    self.choose(self.rng).run(tx)
                tx.finish()
                if not tx.changes:
                    self.dialect.rollback(self._conn)
                    self.budget.settle(granted, 0)
                    return 0
                if self.ledger is not None:
                    tx.execute(self.dialect.tx_info_sql(), ())
                    xid, clock = tx.cur.fetchone()
                    info = (int(xid), clock)
                committing = True
                self.dialect.commit(self._conn)
            except Exception as exc:
                kind = self.dialect.classify(exc)
                if kind == "retry":
                    log.debug("worker %d: retrying after %s", self.index, exc)
                    self._rollback()
                    with self.stats.lock:
                        self.stats.retries += 1
                    time.sleep(self.rng.random() * 0.01)
                    continue
                if kind == "connection":
                    self._reconnect(exc)
                    if committing and tx and info is not None and self._committed(info[0]):
                        self._done(tx, granted, info)
                        return len(tx.changes)
                    if committing and info is None:
                        log.warning(
                            "worker %d: connection lost during COMMIT; outcome unknown "
                            "(no ledger, so no transaction id), counted as rolled back",
                            self.index,
                        )
                    if self.stop.is_set():
                        self.budget.settle(granted, 0)
                        return 0
                    continue
                self.budget.settle(granted, 0)
                if kind == "database":
                    raise DatabaseRefused(
                        f"the database refused a simulated statement: `{first_line(exc)}`",
                        hint="check that the user may write to the profile's tables and that "
                        "the database is writable",
                    ) from exc
                raise
            assert tx is not None
            self._done(tx, granted, info)
            return len(tx.changes)

    def _done(self, tx: Tx, granted: int, info: tuple[int, datetime] | None) -> None:
        if info is not None:
            try:
                info = (info[0], self._exact_commit_time(info[0]) or info[1])
            except Exception as exc:  # the commit stands; only the timestamp is approximate
                if self.dialect.classify(exc) != "connection":
                    raise
                log.warning(
                    "worker %d: no exact commit time for tx %d (%s)", self.index, info[0], exc
                )
        self.budget.settle(granted, len(tx.changes))
        for table, ids in tx.inserted().items():
            self.keys.note_inserted(table, ids)
        self.stats.add(tx.changes)
        if self.ledger is not None and info is not None:
            self.ledger.append(
                tx.changes, schema=self.dialect.schema, commit_ts=info[1], tx=info[0]
            )

    def _rollback(self) -> None:
        try:
            self.dialect.rollback(self._conn)
        except Exception as exc:
            if self.dialect.classify(exc) != "connection":
                raise
            self._reconnect(exc)

    def _reconnect(self, cause: BaseException) -> None:
        log.warning(
            "worker %d: connection lost (%s); reconnecting",
            self.index,
            str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause),
        )
        try:
            self._conn.close()
        except Exception:
            pass
        deadline = time.monotonic() + RECONNECT_TIMEOUT
        while True:
            try:
                self._connect()
                with self.stats.lock:
                    self.stats.reconnects += 1
                return
            except DatabaseUnavailable:
                if self.stop.is_set():
                    raise _Stopped from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _committed(self, xid: int) -> bool:
        """Whether a transaction whose COMMIT reply was lost did commit (Postgres only)."""
        if self.dialect.name != "postgres":
            return False
        deadline = time.monotonic() + 30
        while True:
            status = self.dialect.run_alone(
                self._conn, "SELECT pg_xact_status(%s::text::xid8)", (str(xid),)
            )[0]
            if status != "in progress" or time.monotonic() > deadline:
                log.info(
                    "worker %d: transaction %d whose COMMIT reply was lost: %s",
                    self.index,
                    xid,
                    status,
                )
                return bool(status == "committed")
            time.sleep(0.1)  # the old session may still be finishing it

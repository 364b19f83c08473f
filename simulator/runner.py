"""The simulator's library API: `Simulator(url, ...).setup()` and `.run(stop_event)`.

The CLI (`tidemark simulate`) and `tidemark up` (in a thread) both call it. `run` starts one
thread per worker, each with its own connection, and returns a `Summary` when the change
budget is spent, the duration is over, or `stop_event` is set; workers always finish the
transaction in flight first.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tidemark.simulator.connect import connect, parse_url
from tidemark.simulator.engine import Budget, KeySpace, Skew
from tidemark.simulator.errors import SimulatorConfigError, first_line
from tidemark.simulator.ledger import Ledger
from tidemark.simulator.profiles import get_profile
from tidemark.simulator.profiles.base import Operation, OpKind
from tidemark.simulator.values import pools
from tidemark.simulator.worker import RateLimiter, Stats, Worker

log = logging.getLogger(__name__)
DEFAULT_MIX: dict[OpKind, float] = {"insert": 0.5, "update": 0.35, "delete": 0.15}


@dataclass(frozen=True)
class Progress:
    """A snapshot for a progress line."""

    committed: int
    transactions: int
    retries: int
    reconnects: int
    elapsed: float
    rate: float  # changes/s over the last interval


@dataclass(frozen=True)
class Summary:
    """What a run did: committed row changes by table and op (`c`, `u`, `d`)."""

    counts: dict[str, dict[str, int]]
    transactions: int
    retries: int
    reconnects: int
    elapsed: float
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(sum(ops.values()) for ops in self.counts.values()))

    @property
    def rate(self) -> float:
        return self.total / self.elapsed if self.elapsed > 0 else 0.0


class Simulator:
    """OLTP change generator for one database and one profile.

    Args:
        url: `postgresql://...` or `mssql://...`.
        profile: `customers`, `bank` or `retail`.
        workers: concurrent connections.
        rate: target committed changes per second over all workers (None: as fast as possible).
        max_changes: stop after exactly this many committed row changes.
        duration: stop after this many seconds.
        seed: makes a one-worker run repeat the same operations on the same starting data.
        ledger: append one JSON line per committed row change to this file.
        skew: `recent` (most updates/deletes hit recent rows) or `uniform`.
        mix: weights of `insert`, `update`, `delete` operations.
        tx_size: average row changes per transaction.
    """

    def __init__(
        self,
        url: str,
        *,
        profile: str = "customers",
        workers: int = 1,
        rate: float | None = None,
        max_changes: int | None = None,
        duration: float | None = None,
        seed: int | None = None,
        ledger: str | Path | None = None,
        skew: Skew = "recent",
        mix: Mapping[OpKind, float] | None = None,
        tx_size: int = 10,
    ) -> None:
        self.target = parse_url(url)
        self.profile = get_profile(profile)
        if workers < 1:
            raise SimulatorConfigError(f"--workers must be at least 1, not `{workers}`")
        if max_changes is not None and max_changes < 0:
            raise SimulatorConfigError(f"--max-changes must be >= 0, not `{max_changes}`")
        if rate is not None and rate <= 0:
            raise SimulatorConfigError(f"--rate must be positive, not `{rate}`")
        self.workers = workers
        self.rate = rate
        self.max_changes = max_changes
        self.duration = duration
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.ledger_path = ledger
        self.skew = skew
        self.mix = dict(mix or DEFAULT_MIX)
        if tx_size < 1:
            raise SimulatorConfigError(f"--tx-size must be at least 1, not `{tx_size}`")
        self.tx_size = tx_size
        self._choices = self._weights()

    def _weights(self) -> tuple[list[Operation], list[float]]:
        ops, cumulative, total = [], [], 0.0
        for kind, share in self.mix.items():
            if share < 0:
                raise SimulatorConfigError(f"mix weight for `{kind}` is negative")
            of_kind = [op for op in self.profile.operations if op.kind == kind]
            kind_total = sum(op.weight for op in of_kind)
            for op in of_kind:
                total += share * op.weight / kind_total
                ops.append(op)
                cumulative.append(total)
        if total <= 0:
            raise SimulatorConfigError(
                "the operation mix has no positive weight",
                hint="e.g. --mix insert=50,update=35,delete=15",
            )
        return ops, cumulative

    def _choose(self, rng: random.Random) -> Operation:
        ops, cumulative = self._choices
        return rng.choices(ops, cum_weights=cumulative)[0]

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Create the profile's tables, indexes and reference data; a no-op when present."""
        from tidemark.simulator.setup import create_schema

        conn = connect(self.target)
        try:
            create_schema(conn, self.target.dialect, self.profile)
        except Exception as exc:
            if self.target.dialect.classify(exc) != "database":
                raise
            raise SimulatorConfigError(
                f"cannot create the `{self.profile.name}` schema: `{first_line(exc)}`",
                hint="use a user that may create tables (or let an owner run --setup once)",
            ) from exc
        finally:
            conn.close()

    # -- run -------------------------------------------------------------------------------------
    def run(
        self,
        stop_event: threading.Event | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 0.5,
    ) -> Summary:
        """Generate changes until a limit is hit or `stop_event` is set; see the class doc."""
        from tidemark.simulator.setup import key_ranges

        keys = KeySpace(self.skew)
        conn = connect(self.target)
        try:
            for table, (low, high) in key_ranges(conn, self.target.dialect, self.profile).items():
                keys.set_range(table, low, high)
        finally:
            conn.close()
        stop = threading.Event()
        stats, budget = Stats(), Budget(self.max_changes)
        ledger = Ledger(self.ledger_path) if self.ledger_path else None
        value_pools = pools(self.seed)
        limiter = RateLimiter(self.rate)
        workers = [
            Worker(
                i,
                target=self.target,
                profile=self.profile,
                pools=value_pools,
                rng=random.Random(f"{self.seed}:{i}"),
                keys=keys,
                budget=budget,
                limiter=limiter,
                stats=stats,
                ledger=ledger,
                stop=stop,
                choose=self._choose,
                tx_size=self.tx_size,
            )
            for i in range(self.workers)
        ]
        threads = [
            threading.Thread(target=w.run, name=f"simulator-{w.index}", daemon=True)
            for w in workers
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        last_count, last_time = 0, started
        try:
            while any(t.is_alive() for t in threads):
                wait = progress_interval
                if self.duration is not None:
                    wait = max(0.001, min(wait, started + self.duration - time.monotonic()))
                for t in threads:
                    t.join(timeout=wait / len(threads))
                now = time.monotonic()
                if (stop_event is not None and stop_event.is_set()) or (
                    self.duration is not None and now - started >= self.duration
                ):
                    stop.set()
                if on_progress is not None and now - last_time >= progress_interval:
                    committed = budget.committed
                    on_progress(
                        Progress(
                            committed,
                            stats.transactions,
                            stats.retries,
                            stats.reconnects,
                            now - started,
                            (committed - last_count) / (now - last_time),
                        )
                    )
                    last_count, last_time = committed, now
            stop.set()
            for t in threads:
                t.join()
        except BaseException:  # e.g. a second Ctrl+C: give workers a moment, then leave
            stop.set()
            for t in threads:
                t.join(timeout=5)
            raise
        finally:
            if ledger is not None:
                ledger.close()
        errors = [w.error for w in workers if w.error is not None]
        if errors:
            raise errors[0]
        counts: dict[str, dict[str, int]] = {}
        for (table, op), n in sorted(stats.changes.items()):
            counts.setdefault(table, {})[op] = n
        return Summary(
            counts, stats.transactions, stats.retries, stats.reconnects, time.monotonic() - started
        )

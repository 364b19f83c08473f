"""One simulated transaction: the API operations use, and the change accounting behind it.

A `Tx` wraps a cursor for one database transaction. Operations call `insert`, `update`,
`delete`, `lock` and `delete_tree`; each records the row changes the database reports back
(RETURNING / OUTPUT), so the count is what really changed, never what was planned. A `Tx`
never exceeds its `budget` of row changes: that is how `--max-changes` stays exact across
workers (`Budget` hands out reservations before the transaction and takes back the unused
part after it).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tidemark.simulator.dialects import Dialect, LockMode
from tidemark.simulator.schema import Table
from tidemark.simulator.values import Pools

Op = Literal["c", "u", "d"]
Skew = Literal["recent", "uniform"]


@dataclass(frozen=True)
class Change:
    """One committed-to-be row change."""

    table: str
    key: int
    op: Op


class Budget:
    """Shares `--max-changes` among workers: reserve before, settle after each transaction."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._committed = 0
        self._reserved = 0

    def reserve(self, want: int) -> int:
        """Up to `want` changes for one transaction; 0 when nothing is left right now."""
        with self._lock:
            if self.limit is None:
                return want
            grant = max(0, min(want, self.limit - self._committed - self._reserved))
            self._reserved += grant
            return grant

    def settle(self, granted: int, used: int) -> None:
        """Commit `used` of a reservation of `granted` (0 after a rollback)."""
        with self._lock:
            if self.limit is not None:
                self._reserved -= granted
            self._committed += used

    @property
    def exhausted(self) -> bool:
        with self._lock:
            return self.limit is not None and self._committed >= self.limit

    @property
    def committed(self) -> int:
        return self._committed


class KeySpace:
    """The id range of each table, shared by the workers, to aim updates and deletes.

    `recent` skew: keys are drawn back from the highest id with an exponential distance, so
    most hits land on recently inserted rows, as in real OLTP. `uniform`: any key in range.
    """

    def __init__(self, skew: Skew) -> None:
        self.skew = skew
        self._ranges: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def set_range(self, table: str, low: int | None, high: int | None) -> None:
        with self._lock:
            self._ranges[table] = [low or 1, high or 0]

    def note_inserted(self, table: str, ids: Sequence[int]) -> None:
        if ids:
            with self._lock:
                span = self._ranges.setdefault(table, [min(ids), 0])
                span[1] = max(span[1], max(ids))

    def pick(self, rng: random.Random, table: str, n: int, skew: Skew | None = None) -> list[int]:
        """Up to `n` distinct candidate ids (they may have been deleted meanwhile)."""
        low, high = self._ranges.get(table, (1, 0))
        if high < low or n <= 0:
            return []
        span = high - low + 1
        if (skew or self.skew) == "uniform":
            keys = {rng.randint(low, high) for _ in range(n)}
        else:
            mean = max(20.0, min(1000.0, span / 20))
            keys = {max(low, high - int(rng.expovariate(1.0 / mean))) for _ in range(n)}
        return sorted(keys)


class Tx:
    """One database transaction of simulated work; see the module docstring."""

    def __init__(
        self,
        cursor: Any,
        dialect: Dialect,
        tables: dict[str, Table],
        *,
        rng: random.Random,
        pools: Pools,
        keys: KeySpace,
        budget: int,
    ) -> None:
        self.cur = cursor
        self.dialect = dialect
        self.tables = tables
        self.rng = rng
        self.pools = pools
        self.keys = keys
        self.budget = budget
        self.changes: list[Change] = []
        self._inserted: dict[str, list[int]] = {}
        self._deferred: dict[tuple[str, str], dict[int, Any]] = {}
        self._begin = dialect.begin_prefix

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        """Run a statement; the first one also opens the transaction (see `begin_prefix`)."""
        if self._begin:
            sql, self._begin = self._begin + sql, ""
        self.cur.execute(sql, params)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.changes) - sum(len(d) for d in self._deferred.values())

    def add_later(self, table: str, column: str, deltas: dict[int, Any]) -> None:
        """Add `deltas` to `column` of rows by id just before commit (e.g. balances).

        Deferring puts every such row lock at the end of the transaction, taken in id order
        by one statement, which keeps concurrent transactions from deadlocking on them. The
        rows must exist (the caller holds a lock or a child row that keeps them). Each new id
        counts against the budget now.
        """
        pending = self._deferred.setdefault((table, column), {})
        new = [k for k in deltas if k not in pending]
        if len(new) > self.remaining:
            raise AssertionError(f"deferred update larger than the remaining budget on {table}")
        for key, delta in deltas.items():
            pending[key] = pending[key] + delta if key in pending else delta

    def finish(self) -> None:
        """Apply the deferred updates (call once, right before commit)."""
        deferred, self._deferred = self._deferred, {}
        for (table, column), deltas in sorted(deferred.items()):
            self.update(table, (), sorted(deltas.items()), add_cols=(column,), partial=False)

    def _record(self, table: str, ids: Sequence[int], op: Op) -> None:
        if len(self.changes) + len(ids) > self.budget:  # a bug in an operation, not bad luck
            raise AssertionError(f"operation exceeded its budget on {table}")
        self.changes.extend(Change(table, int(i), op) for i in ids)

    def pick(self, table: str, n: int, skew: Skew | None = None) -> list[int]:
        """Candidate keys; `skew` overrides the run's choice (e.g. parents of new rows)."""
        return self.keys.pick(self.rng, table, n, skew)

    def inserted(self) -> dict[str, list[int]]:
        """Ids inserted by this transaction (for the key space after commit)."""
        return self._inserted

    # -- statements --------------------------------------------------------------------------
    def insert(self, table: str, cols: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> list[int]:
        if not rows:
            return []
        if len(rows) > self.remaining:
            raise AssertionError("insert larger than the remaining budget")
        params = [v for row in rows for v in row]
        self.execute(self.dialect.insert_sql(table, cols, len(rows)), params)
        ids = [r[0] for r in self.cur.fetchall()]
        self._record(table, ids, "c")
        self._inserted.setdefault(table, []).extend(ids)
        return ids

    def insert_children(
        self,
        table: str,
        cols: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        *,
        fk: str,
        parent: str,
        returning: tuple[str, ...] = (),
        parent_not: tuple[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Insert rows whose parent still exists (others are dropped by the database) and
        key-share lock those parents; returns `(id, *returning)` per inserted row."""
        if not rows:
            return []
        if len(rows) > self.remaining:
            raise AssertionError("insert larger than the remaining budget")
        sql = self.dialect.insert_children_sql(
            self.tables[table],
            cols,
            len(rows),
            fk=fk,
            parent=parent,
            returning=returning,
            parent_not=parent_not[0] if parent_not else None,
        )
        params = [v for row in rows for v in row]
        self.execute(sql, [*params, parent_not[1]] if parent_not else params)
        made = [tuple(r) for r in self.cur.fetchall()]
        ids = [r[0] for r in made]
        self._record(table, ids, "c")
        self._inserted.setdefault(table, []).extend(ids)
        return made

    def update(
        self,
        table: str,
        set_cols: tuple[str, ...],
        rows: Sequence[Sequence[Any]],
        add_cols: tuple[str, ...] = (),
        *,
        partial: bool = True,
    ) -> list[int]:
        """`rows` are `(id, *set_values, *add_values)` with distinct ids.

        With `partial`, rows beyond the remaining budget are dropped; without it (balance
        updates that must go with other changes) exceeding the budget is a bug.
        """
        if not rows:
            return []
        rows = sorted(rows, key=lambda r: r[0])
        if partial:
            rows = rows[: self.remaining]
        params = [v for row in rows for v in row]
        sql = self.dialect.update_sql(self.tables[table], set_cols, add_cols, len(rows))
        self.execute(sql, params)
        ids = [r[0] for r in self.cur.fetchall()]
        self._record(table, ids, "u")
        return ids

    def delete(
        self,
        table: str,
        ids: Sequence[int],
        *,
        by: str = "id",
        returning: tuple[str, ...] = (),
        match: Sequence[Any] = (),
        match_cols: tuple[str, ...] = (),
    ) -> list[tuple[Any, ...]]:
        """Delete by `id` (at most `remaining` ids); returns `(id, *returning)` per row."""
        if not ids:
            return []
        if by == "id":
            ids = list(ids)[: self.remaining]
        sql = self.dialect.delete_sql(table, len(ids), by=by, returning=returning, match=match_cols)
        self.execute(sql, [*ids, *match])
        rows = [tuple(r) for r in self.cur.fetchall()]
        self._record(table, [r[0] for r in rows], "d")
        return rows

    def lock(
        self, table: str, ids: Sequence[int], cols: tuple[str, ...] = (), mode: LockMode = "share"
    ) -> list[tuple[Any, ...]]:
        """Lock the existing rows among `ids` (share: they stay; update: we change them)."""
        if not ids:
            return []
        self.execute(self.dialect.lock_sql(table, len(ids), cols, mode), list(ids))
        return [tuple(r) for r in self.cur.fetchall()]

    def count_children(self, child: str, fk: str, ids: Sequence[int]) -> dict[int, int]:
        if not ids:
            return {}
        self.execute(self.dialect.count_children_sql(child, fk, len(ids)), list(ids))
        return {int(k): int(n) for k, n in self.cur.fetchall()}

    def delete_tree(
        self,
        parent: str,
        ids: Sequence[int],
        children: Sequence[tuple[str, str]],
        *,
        max_children: int | None = None,
    ) -> int:
        """Delete parents and all their children, within the budget; returns parents deleted.

        The parents are locked first: no new child can appear (inserting one needs a key-share
        lock on the parent), so the child count read next bounds what the deletes will touch.
        """
        locked = [r[0] for r in self.lock(parent, ids, mode="update")]
        if not locked:
            return 0
        totals = dict.fromkeys(locked, 0)
        for child, fk in children:
            for key, n in self.count_children(child, fk, locked).items():
                totals[key] += n
        chosen, cost = [], 0
        for key in locked:
            if max_children is not None and totals[key] > max_children:
                continue
            if cost + totals[key] + 1 <= self.remaining:
                chosen.append(key)
                cost += totals[key] + 1
        if not chosen:
            return 0
        for child, fk in children:
            self.delete(child, chosen, by=fk)
        return len(self.delete(parent, chosen))

"""Random but legal change histories for property tests, and the obvious replay.

A history is a list of transactions over a few keys: creates, snapshot reads, updates (some
changing nothing, some with TOAST placeholders), deletes, re-inserts and primary-key updates
(delete + create in one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tests.milestoning_support import SOURCE, D, ts

NAMES = ["a", "b", "ü", None]
AMOUNTS = [D("1.00"), D("1.10"), None]
NOTES = ["n1", "n2", None]
BLOBS = [b"", b"\x00", None]


@dataclass(frozen=True)
class Event:
    """One change as the decoder would emit it, plus the row it leaves behind."""

    key: int
    op: str
    row: dict  # the event's row image (placeholders NULL, deletes key only)
    unchanged: tuple[str, ...]
    position: int
    second: int
    tx: int = 0


def _values(draw: st.DrawFn) -> dict:
    return {
        "name": draw(st.sampled_from(NAMES)),
        "amount": draw(st.sampled_from(AMOUNTS)),
        "note": draw(st.sampled_from(NOTES)),
        "blob": draw(st.sampled_from(BLOBS)),
        "seen": ts(draw(st.integers(0, 1))),
    }


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """A random but legal change history (what a real source could produce)."""
    state: dict[int, dict] = {}
    result: list[Event] = []
    second = tx = 0
    for _ in range(draw(st.integers(0, 30))):
        if draw(st.booleans()):  # a new transaction; sometimes in the same microsecond
            second += draw(st.integers(0, 2))
            tx += 1
        key = draw(st.integers(0, 5))

        def emit(
            op: str,
            k: int,
            row: dict,
            unchanged: tuple[str, ...] = (),
            at: int = second,
            in_tx: int = tx,
        ) -> None:
            result.append(Event(k, op, {"id": k, **row}, unchanged, len(result) + 1, at, in_tx))

        if key not in state:
            row = _values(draw)
            emit(draw(st.sampled_from(["c", "r"])), key, row)
            state[key] = row
            continue
        kind = draw(st.sampled_from(["update", "same", "toast", "delete", "pk", "reread"]))
        if kind == "update":
            row = _values(draw)
            emit("u", key, row)
            state[key] = row
        elif kind == "same":
            emit("u", key, dict(state[key]))
        elif kind == "toast":
            row = {**_values(draw), "note": None}
            emit("u", key, row, ("note",))
            state[key] = {**row, "note": state[key]["note"]}
        elif kind == "reread":
            row = dict(state[key]) if draw(st.booleans()) else _values(draw)
            emit("r", key, row)
            state[key] = row
        elif kind == "delete":
            emit("d", key, {})
            del state[key]
        else:  # primary-key update: SQL Server sends delete + create in one transaction
            free = [k for k in range(6) if k not in state]
            row = state.pop(key)
            emit("d", key, dict(row))
            if free:
                new_key = draw(st.sampled_from(free))
                emit("c", new_key, dict(row))
                state[new_key] = row
    return result


def to_rows(history: list[Event]) -> list[dict]:
    return [
        {
            **e.row,
            "op": e.op,
            "pos": e.position,
            "ts": e.second,
            "tx": e.tx,
            "unchanged": list(e.unchanged),
        }
        for e in history
    ]


def replay(history: list[Event], until_second: float | None = None) -> dict[tuple, dict]:
    """The source table's state after the events up to an instant: the obvious loop."""
    state: dict[tuple, dict] = {}
    for e in history:
        if until_second is not None and e.second > until_second:
            break
        key = (e.key,)
        if e.op == "d":
            state.pop(key, None)
            continue
        row = {c: e.row.get(c) for c in SOURCE}
        for name in e.unchanged:
            row[name] = state[key][name]
        state[key] = row
    return state

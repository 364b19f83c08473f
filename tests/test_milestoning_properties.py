"""Property tests: for random change histories the core agrees with a plain replay.

A history is a list of transactions over a few keys: creates, snapshot reads, updates (some
changing nothing, some with TOAST placeholders), deletes, re-inserts and primary-key updates
(delete + create in one transaction). The reference is the obvious Python loop over the
events; the core must match it as-of every instant, however the history is cut into batches.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.milestoning_histories import Event, histories, replay, to_rows
from tests.milestoning_support import SCHEMA, SOURCE, MemoryLake, changes, events, pos, ts
from tidemark.kernel.columns import (
    BATCH_IN,
    BATCH_OUT,
    OP,
    POSITION,
    VALID_FROM,
    VALID_TO,
)
from tidemark.stream_processors.milestoning.core import milestone

INGESTED = datetime(2026, 3, 2, tzinfo=UTC)
PROFILE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected_versions(history: list[Event], batch_of: dict[int, int]) -> list[tuple]:
    """Every forensic version the history must produce, with chained intervals."""
    versions: list[dict] = []
    open_by_key: dict[int, dict] = {}
    state: dict[int, dict] = {}
    for e in history:
        previous = open_by_key.get(e.key)
        if e.op == "d":
            row = None
        else:
            row = {c: e.row.get(c) for c in SOURCE}
            for name in e.unchanged:
                row[name] = state[e.key][name]
            if e.op in ("u", "r") and previous is not None and previous["row"] == row:
                continue  # no-op: no version, nothing closed
        if previous is not None:
            previous[VALID_TO] = ts(e.second)
            previous[BATCH_OUT] = batch_of[e.position]
            del open_by_key[e.key]
        if row is None:
            state.pop(e.key, None)
            continue
        state[e.key] = row
        version = {
            "row": row,
            VALID_FROM: ts(e.second),
            VALID_TO: None,
            BATCH_IN: batch_of[e.position],
            BATCH_OUT: None,
            OP: e.op,
            POSITION: pos(e.position),
        }
        versions.append(version)
        open_by_key[e.key] = version
    return sorted(
        (
            v[POSITION],
            tuple(v["row"].items()),
            v[VALID_FROM],
            v[VALID_TO],
            v[BATCH_IN],
            v[BATCH_OUT],
            v[OP],
        )
        for v in versions
    )


def expected_changelog(history: list[Event]) -> list[str]:
    """Every event's position, but for snapshot reads that repeat their key's state: those
    read the same source state again and are the same event (the replay guard's rule)."""
    state: dict[int, dict] = {}
    kept = []
    for e in history:
        if e.op == "d":
            state.pop(e.key, None)
            kept.append(pos(e.position))
            continue
        row = {c: e.row.get(c) for c in SOURCE}
        for name in e.unchanged:
            row[name] = state[e.key][name]
        if not (e.op == "r" and state.get(e.key) == row):
            kept.append(pos(e.position))
        state[e.key] = row
    return kept


def actual_versions(lake: MemoryLake) -> list[tuple]:
    return sorted(
        (
            r[POSITION],
            tuple((c, r[c]) for c in SOURCE),
            r[VALID_FROM],
            r[VALID_TO],
            r[BATCH_IN],
            r[BATCH_OUT],
            r[OP],
        )
        for r in lake.forensic
    )


COMPOSITE = ("region", "id")
COMPOSITE_SCHEMA = pa.schema([pa.field("region", pa.string()), *SCHEMA])


def region(key: int) -> str:
    return f"rég{key % 2}"


def load(
    history: list[Event], cuts: list[int], *, composite: bool = False
) -> tuple[MemoryLake, dict[int, int]]:
    """Milestone the history in batches cut at `cuts`, feeding results back as `current`.

    The core must give the same lake for any cut, even inside a transaction. With
    `composite`, the key is (region, id), region a string derived from id.
    """
    keys = COMPOSITE if composite else ("id",)
    schema = COMPOSITE_SCHEMA if composite else SCHEMA
    lake = MemoryLake(keys=keys)
    rows = to_rows(history)
    if composite:
        rows = [{**r, "region": region(r["id"])} for r in rows]
    bounds = [0, *sorted(set(cuts)), len(rows)]
    batch_of: dict[int, int] = {}
    for batch_id, (start, end) in enumerate(itertools.pairwise(bounds), start=1):
        part = rows[start:end]
        for row in part:
            batch_of[row["pos"]] = batch_id
        batch_keys = {tuple(r[k] for k in keys) for r in part}
        result = milestone(
            changes(events(part, schema=schema), keys),
            lake.current(batch_keys, schema=schema),
            batch_id=batch_id,
            ingested_at=INGESTED,
        )
        lake.apply(result)
    return lake, batch_of


@PROFILE
@given(history=histories())
def test_live_equals_replay_and_forensic_as_of_every_instant_equals_replay(history):
    lake, _ = load(history, [])
    assert lake.live_rows() == replay(history)
    instants = sorted({e.second for e in history})
    for second in [-1, *instants]:
        assert lake.as_of(ts(second)) == replay(history, second), f"as of {second}"
        assert lake.as_of(ts(second + 0.5)) == replay(history, second + 0.5)


@PROFILE
@given(history=histories(), data=st.data())
def test_any_split_into_batches_gives_the_same_lake(history, data):
    cuts = data.draw(st.lists(st.integers(0, len(history)), max_size=5))
    lake, batch_of = load(history, cuts)
    assert actual_versions(lake) == expected_versions(history, batch_of)
    assert lake.live_rows() == replay(history)
    assert [r[POSITION] for r in lake.changelog] == expected_changelog(history)
    for second in sorted({e.second for e in history}):
        assert lake.as_of(ts(second)) == replay(history, second)


@PROFILE
@given(history=histories(), data=st.data())
def test_no_version_repeats_its_predecessor(history, data):
    lake, _ = load(history, data.draw(st.lists(st.integers(0, len(history)), max_size=3)))
    by_key: dict[tuple, list[dict]] = {}
    for r in sorted(lake.forensic, key=lambda r: r[POSITION]):
        by_key.setdefault(lake.key_of(r), []).append(r)
    deletes = [(pos(e.position), (e.key,)) for e in history if e.op == "d"]
    for key, versions in by_key.items():
        for before, after in itertools.pairwise(versions):
            # A version closed by a delete and re-created at the same instant is a new
            # row, not a repeat: only versions that directly replace each other count.
            deleted_between = any(
                k == key and before[POSITION] < p < after[POSITION] for p, k in deletes
            )
            if after[OP] in ("u", "r") and not deleted_between:
                assert before[VALID_TO] == after[VALID_FROM]
                assert [before[c] for c in SOURCE] != [after[c] for c in SOURCE]


@PROFILE
@given(history=histories(), data=st.data())
def test_replaying_a_batch_adds_nothing(history, data):
    cut = data.draw(st.integers(0, len(history)))
    lake, _ = load(history[:cut], [])
    rows = to_rows(history[cut:])
    keys = {(r["id"],) for r in rows}
    first = milestone(changes(events(rows)), lake.current(keys), batch_id=2, ingested_at=INGESTED)
    lake.apply(first)
    before = (list(lake.forensic), dict(lake.live), len(lake.changelog))
    # The same batch again: per-key positions drop what the open versions already hold...
    again = milestone(
        changes(events(rows)),
        lake.current(keys),
        batch_id=3,
        ingested_at=INGESTED,
        applied_position=first.last_position or None,
    )
    for part in (
        "changelog",
        "live_upserts",
        "live_deletes",
        "forensic_inserts",
        "forensic_closes",
    ):
        assert getattr(again, part).num_rows == 0, part
    lake.apply(again)
    assert (lake.forensic, lake.live, len(lake.changelog)) == before
    # ...and even without the table watermark no open version's events come back.
    per_key = milestone(changes(events(rows)), lake.current(keys), batch_id=3, ingested_at=INGESTED)
    open_keys = {lake.key_of(r) for r in lake.forensic if r[VALID_TO] is None}
    reopened = {lake.key_of(r) for r in per_key.forensic_inserts.to_pylist()}
    assert not (reopened & open_keys)


@PROFILE
@given(history=histories(), data=st.data())
def test_a_composite_key_gives_the_same_history(history, data):
    cuts = data.draw(st.lists(st.integers(0, len(history)), max_size=4))
    single, _ = load(history, cuts)
    composite, _ = load(history, cuts, composite=True)
    for row in composite.forensic:
        assert row.pop("region") == region(row["id"])
    assert sorted(composite.forensic, key=lambda r: r[POSITION]) == sorted(
        single.forensic, key=lambda r: r[POSITION]
    )
    assert {k[1]: v for k, v in composite.live_rows().items()} == {
        k[0]: v for k, v in single.live_rows().items()
    }

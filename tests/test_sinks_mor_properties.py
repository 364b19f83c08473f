"""Property tests: random change histories, milestoned by the real core and committed to real
Delta tables in both write modes, give the same live table and the same as-of answers; both
agree with the obvious replay of the source."""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.milestoning_histories import Event, histories, replay, to_rows
from tests.milestoning_support import SOURCE, changes, events, ts
from tidemark.kernel.columns import VALID_FROM, VALID_TO, Layer
from tidemark.sinks.lake import Lake
from tidemark.sinks.readers import read_table
from tidemark.stream_processors.milestoning.core import milestone

TABLE = "shop.public.t"
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def load(lake: Lake, history: list[Event], cuts: list[int]) -> None:
    """Run the history through the core into `lake`, in batches cut at `cuts`."""
    rows = to_rows(history)
    bounds = [0, *sorted(set(cuts)), len(rows)]
    for batch_id, (start, end) in enumerate(itertools.pairwise(bounds), start=1):
        part = rows[start:end]
        if not part:
            continue
        keys = pa.table({"id": pa.array(sorted({r["id"] for r in part}), pa.int64())})
        result = milestone(
            changes(events(part)),
            lake.current_versions(TABLE, keys),
            batch_id=batch_id,
            ingested_at=datetime(2026, 3, 2, tzinfo=UTC),
            applied_position=lake.applied_position(TABLE),
        )
        lake.commit_batch(
            batch_id,
            [result],
            source_positions={"src": result.last_position},
            started_at=datetime.now(UTC),
        )


def read(lake: Lake, layer: Layer) -> list[dict]:
    dt = lake.sink(TABLE, layer).handle.dt
    if dt is None:
        return []
    dt.update_incremental()
    return read_table(dt).to_pylist()


def live_state(lake: Lake) -> dict[tuple, dict]:
    return {(r["id"],): {c: r[c] for c in SOURCE} for r in read(lake, Layer.LIVE)}


def as_of(lake: Lake, second: float) -> dict[tuple, dict]:
    at = ts(second)
    return {
        (r["id"],): {c: r[c] for c in SOURCE}
        for r in read(lake, Layer.FORENSIC)
        if r[VALID_FROM] <= at and (r[VALID_TO] is None or r[VALID_TO] > at)
    }


@PROFILE
@given(history=histories(), data=st.data())
def test_both_modes_give_the_same_live_and_as_of_answers(history, data):
    cuts = data.draw(st.lists(st.integers(0, len(history)), max_size=3))
    lakes = {}
    with tempfile.TemporaryDirectory() as cow, tempfile.TemporaryDirectory() as mor:
        for mode, root in (("copy_on_write", cow), ("merge_on_read", mor)):
            lake = Lake(root, app_id="prop", write_modes={"*": mode})  # type: ignore[dict-item]
            load(lake, history, cuts)
            lakes[mode] = lake
        cow_lake, mor_lake = lakes["copy_on_write"], lakes["merge_on_read"]
        assert live_state(mor_lake) == live_state(cow_lake) == replay(history)
        seconds = sorted({e.second for e in history} | {e.second + 0.5 for e in history})
        for second in seconds:
            assert as_of(mor_lake, second) == as_of(cow_lake, second)
            assert as_of(mor_lake, second) == replay(history, until_second=second)
        for lake in lakes.values():
            lake.close()

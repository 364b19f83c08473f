"""The keys a re-snapshot keeps (`stream_processors/embedded/reconcile.py`), on a real lake
directory (Delta tables, no services).

Both stories: a resync asked for while another of the table runs. Debezium scans the table
again right after, and from the signal on its notices carry the new id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tests.test_arming_tracker import T, note, tracker
from tidemark.kernel.model import TableChanges
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.embedded.arming import Plan, SourceTracker
from tidemark.stream_processors.embedded.reconcile import Reconciler

FIRST, SECOND = "tidemark-resync-1", "tidemark-resync-2"
FIRST_DONE = note(
    "TABLE_SCAN_COMPLETED",
    "Incremental Snapshot",
    SECOND,
    scanned_collection="public.t",
    status="SUCCEEDED",
)
SECOND_CHUNK = note(
    "IN_PROGRESS", "Incremental Snapshot", SECOND, current_collection_in_progress="public.t"
)


def _first_running() -> SourceTracker:
    track = tracker()
    started = note("STARTED", "Incremental Snapshot", FIRST, data_collections="public.t")
    track.adopt(track.plan(offsets=None, notifications=[started], snapshot_rows={}))
    return track


def _kept(tmp_path: Path, plan: Plan, ids: list[int]) -> dict[str, list[int]]:
    """Per snapshot, the keys kept once a batch of events with `ids` went through `plan`."""
    lake = Lake(str(tmp_path / "lake"), app_id="test")
    try:
        events = pa.table({"id": pa.array(ids, pa.int32())})
        Reconciler(lake, layers={}, keys={T: ("id",)}).changes(
            3, {T: TableChanges(T, ("id",), events)}, [plan]
        )
        return {
            snapshot: sorted(lake.arming.seen(T, snapshot, ["id"]).column("id").to_pylist())
            for snapshot in (FIRST, SECOND)
        }
    finally:
        lake.close()


def test_a_snapshot_beginning_in_the_batch_that_completes_another_keeps_its_keys(
    tmp_path,
) -> None:
    """The first scan's end and the second scan's first chunk share a batch: its keys go to
    the completion (`here`) and must be kept for the second too, or its end takes those rows
    for vanished."""
    plan = _first_running().plan(
        offsets=None, notifications=[FIRST_DONE, SECOND_CHUNK], snapshot_rows={T: 3}
    )
    assert plan.completed[T].id == FIRST and plan.seen == {T: SECOND}
    assert _kept(tmp_path, plan, [4, 5, 6]) == {FIRST: [], SECOND: [4, 5, 6]}  # first: `here`


def test_a_snapshot_queued_behind_another_keeps_keys_from_the_poll_of_its_first_notice(
    tmp_path,
) -> None:
    """From the poll of the second's first notice the keys are kept for both, until the
    second is recorded; then only for it."""
    track = _first_running()
    track.polled([SECOND_CHUNK])
    plan = track.plan(offsets=None, notifications=[], snapshot_rows={T: 2})
    assert plan.seen == {T: FIRST} and plan.queued == {T: SECOND}
    assert _kept(tmp_path, plan, [8, 9]) == {FIRST: [8, 9], SECOND: [8, 9]}
    track.adopt(plan)
    plan = track.plan(offsets=None, notifications=[FIRST_DONE, SECOND_CHUNK], snapshot_rows={})
    assert plan.completed[T].id == FIRST
    assert plan.record.arming[T].id == SECOND and plan.seen[T] == SECOND
    track.adopt(plan)
    after = track.plan(offsets=None, notifications=[], snapshot_rows={})
    assert after.seen == {T: SECOND} and not after.queued  # recorded now

"""The keys a re-snapshot keeps (`stream_processors/embedded/reconcile.py`), on a real lake
directory (Delta tables, no services)."""

from __future__ import annotations

import pyarrow as pa

from tests.test_arming_tracker import T, note, tracker
from tidemark.kernel.model import TableChanges
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.embedded.reconcile import Reconciler


def test_a_snapshot_beginning_in_the_batch_that_completes_another_keeps_its_keys(
    tmp_path,
) -> None:
    """A resync asked for while another of the table ran: Debezium scans the table again
    right after, and its notices carry the new id. When the first scan's end and the second
    scan's first chunk share a batch, that batch's keys go to the completion (`here`) and
    must be kept for the second too, or its end takes those rows for vanished."""
    track = tracker()
    track.adopt(
        track.plan(
            offsets=None,
            notifications=[
                note(
                    "STARTED",
                    "Incremental Snapshot",
                    "tidemark-resync-1",
                    data_collections="public.t",
                )
            ],
            snapshot_rows={},
        )
    )
    first_done = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        "tidemark-resync-2",
        scanned_collection="public.t",
        status="SUCCEEDED",
    )
    second = note(
        "IN_PROGRESS",
        "Incremental Snapshot",
        "tidemark-resync-2",
        current_collection_in_progress="public.t",
    )
    plan = track.plan(offsets=None, notifications=[first_done, second], snapshot_rows={T: 3})
    assert plan.completed[T].id == "tidemark-resync-1"
    assert plan.seen == {T: "tidemark-resync-2"}

    lake = Lake(str(tmp_path / "lake"), app_id="test")
    try:
        reconciler = Reconciler(lake, layers={}, keys={T: ("id",)})
        events = pa.table({"id": pa.array([4, 5, 6], pa.int32())})
        reconciler.changes(7, {T: TableChanges(T, ("id",), events)}, [plan])
        kept = lake.arming.seen(T, "tidemark-resync-2", ["id"]).column("id").to_pylist()
        assert sorted(kept) == [4, 5, 6]
        assert lake.arming.seen(T, "tidemark-resync-1", ["id"]).num_rows == 0  # `here`
    finally:
        lake.close()


def test_a_snapshot_queued_behind_another_keeps_keys_from_the_poll_of_its_first_notice(
    tmp_path,
) -> None:
    """Its notices arrive while the first one still runs (Debezium's notices then carry the
    new id): from their poll on, the keys are kept for both, until the new one is recorded;
    then only for it."""
    track = tracker()
    track.adopt(
        track.plan(
            offsets=None,
            notifications=[
                note(
                    "STARTED",
                    "Incremental Snapshot",
                    "tidemark-resync-1",
                    data_collections="public.t",
                )
            ],
            snapshot_rows={},
        )
    )
    queued = note(
        "IN_PROGRESS",
        "Incremental Snapshot",
        "tidemark-resync-2",
        current_collection_in_progress="public.t",
    )
    track.polled([queued])
    plan = track.plan(offsets=None, notifications=[], snapshot_rows={T: 2})
    assert plan.seen == {T: "tidemark-resync-1"} and plan.queued == {T: "tidemark-resync-2"}

    lake = Lake(str(tmp_path / "lake"), app_id="test")
    try:
        reconciler = Reconciler(lake, layers={}, keys={T: ("id",)})
        events = pa.table({"id": pa.array([8, 9], pa.int32())})
        reconciler.changes(3, {T: TableChanges(T, ("id",), events)}, [plan])
        for snapshot in ("tidemark-resync-1", "tidemark-resync-2"):
            assert sorted(lake.arming.seen(T, snapshot, ["id"]).column("id").to_pylist()) == [
                8,
                9,
            ]
    finally:
        lake.close()
    track.adopt(plan)
    first_done = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        "tidemark-resync-2",
        scanned_collection="public.t",
        status="SUCCEEDED",
    )
    plan = track.plan(offsets=None, notifications=[first_done, queued], snapshot_rows={})
    assert plan.completed[T].id == "tidemark-resync-1"
    assert plan.record.arming[T].id == "tidemark-resync-2" and plan.seen[T] == "tidemark-resync-2"
    track.adopt(plan)
    after = track.plan(offsets=None, notifications=[], snapshot_rows={})
    assert after.seen == {T: "tidemark-resync-2"} and not after.queued  # recorded now


def test_initial_snapshot_notices_never_queue_a_keeping() -> None:
    """Debezium gives each notice of its initial snapshot an id of its own: none of them
    may start keeping keys beside the snapshot under way (they would never be recorded)."""
    track = tracker()
    track.adopt(
        track.plan(
            offsets=None, notifications=[note("STARTED", "Initial Snapshot", "i")], snapshot_rows={}
        )
    )
    track.polled([note("IN_PROGRESS", "Initial Snapshot", "i-other")])
    plan = track.plan(offsets=None, notifications=[], snapshot_rows={})
    assert not plan.queued and plan.seen == {T: "i"}

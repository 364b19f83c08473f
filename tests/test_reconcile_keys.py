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

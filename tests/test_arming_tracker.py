"""The runner's tracker of snapshots (`stream_processors/embedded/arming.py`), from Debezium's
notifications as they arrive (JSON as the sink channel sends them), without services."""

from __future__ import annotations

import json

from tidemark.kernel.positions import SourceRecord
from tidemark.stream_processors.embedded.arming import Notification, SourceTracker

T, U = "src.public.t", "src.public.u"


def note(kind: str, aggregate: str, id_: str = "tidemark-resync-1", **data: str) -> Notification:
    body = {
        "id": id_,
        "type": kind,
        "aggregate_type": aggregate,
        "additional_data": data,
        "timestamp": 1_796_600_000_000,
    }
    return Notification.parse(json.dumps(body))


def tracker(**record: object) -> SourceTracker:
    return SourceTracker(
        SourceRecord("src", **record),  # type: ignore[arg-type]
        lake_table=lambda t: f"src.{t}",
        tables=[T, U],
        held=[T],
    )


def test_an_incremental_snapshot_is_armed_followed_and_completed() -> None:
    track = tracker()
    started = note("STARTED", "Incremental Snapshot", data_collections="public.t")
    plan = track.plan(offsets={"k": '{"lsn": 5}'}, notifications=[started], snapshot_rows={})
    assert plan.record.arming[T].id == "tidemark-resync-1" and plan.record.arming[T].reconcile
    assert plan.seen == {T: "tidemark-resync-1"} and plan.record.offsets == {"k": '{"lsn": 5}'}
    track.adopt(plan)
    plan = track.plan(offsets=None, notifications=[], snapshot_rows={T: 40})
    assert plan.record.arming[T].rows == 40 and plan.seen == {T: "tidemark-resync-1"}
    track.adopt(plan)
    done = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        scanned_collection="public.t",
        status="SUCCEEDED",
    )
    plan = track.plan(offsets=None, notifications=[done], snapshot_rows={T: 2})
    assert T in plan.completed and plan.completed[T].rows == 42
    assert plan.record.armed[T] == "tidemark-resync-1" and not plan.record.arming
    assert plan.record.offsets == {"k": '{"lsn": 5}'}  # kept from before


def test_a_snapshot_delivered_without_its_started_notice_is_armed_at_its_first_chunk() -> None:
    """Seen with Debezium 3.6: a signal read as streaming starts, no STARTED notice."""
    track = tracker()
    chunk = note("IN_PROGRESS", "Incremental Snapshot", current_collection_in_progress="public.t")
    track.polled([chunk])
    plan = track.plan(offsets=None, notifications=[chunk], snapshot_rows={})
    assert plan.record.arming[T].kind == "incremental" and plan.seen == {T: "tidemark-resync-1"}
    track.adopt(plan)
    again = track.plan(offsets=None, notifications=[chunk], snapshot_rows={})
    assert again.record.arming[T].id == "tidemark-resync-1"  # a later chunk of the same snapshot
    done = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        scanned_collection="public.t",
        status="EMPTY",
    )
    assert T in track.plan(offsets=None, notifications=[done], snapshot_rows={}).completed


def test_the_initial_snapshot_completes_every_table_at_its_end_only() -> None:
    """Its per-table notice can come before the table's last row: only COMPLETED counts."""
    track = tracker()
    plan = track.plan(
        offsets=None, notifications=[note("STARTED", "Initial Snapshot", "i")], snapshot_rows={}
    )
    assert set(plan.record.arming) == {T, U}
    assert plan.record.arming[T].reconcile and not plan.record.arming[U].reconcile  # held
    track.adopt(plan)
    scanned = note("TABLE_SCAN_COMPLETED", "Initial Snapshot", "i2", scanned_collection="public.t")
    plan = track.plan(offsets=None, notifications=[scanned], snapshot_rows={})
    assert not plan.completed
    plan = track.plan(
        offsets=None, notifications=[note("COMPLETED", "Initial Snapshot", "i3")], snapshot_rows={}
    )
    assert set(plan.completed) == {T, U} and plan.record.armed == {T: "i", U: "i"}


def test_a_scan_that_did_not_read_the_table_closes_nothing() -> None:
    track = tracker()
    track.adopt(
        track.plan(
            offsets=None,
            notifications=[note("STARTED", "Incremental Snapshot", data_collections="public.t")],
            snapshot_rows={},
        )
    )
    failed = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        scanned_collection="public.t",
        status="NO_PRIMARY_KEY",
    )
    plan = track.plan(offsets=None, notifications=[failed], snapshot_rows={})
    assert not plan.completed and T not in plan.record.arming and T not in plan.record.armed


def test_keys_are_kept_from_the_poll_of_the_started_notice_on() -> None:
    """Events after a STARTED notice may go out in a batch before the notice's own chunk is
    whole in one: their keys are kept as soon as the notice was polled."""
    track = tracker()
    track.polled([note("STARTED", "Incremental Snapshot", data_collections="public.t")])
    assert track.plan(offsets=None, notifications=[], snapshot_rows={}).seen == {
        T: "tidemark-resync-1"
    }


def test_a_snapshot_not_asked_to_reconcile_never_takes_unread_rows_for_gone() -> None:
    """A partition attached is read with a condition (`tidemark-<id>`, not a resync): it
    arms nothing that could delete the rows it does not read."""
    track = tracker()
    started = note("STARTED", "Incremental Snapshot", "tidemark-7", data_collections="public.t")
    track.polled([started])
    plan = track.plan(offsets=None, notifications=[started], snapshot_rows={})
    assert not plan.seen and not plan.record.arming[T].reconcile
    track.adopt(plan)
    done = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        "tidemark-7",
        scanned_collection="public.t",
        status="SUCCEEDED",
    )
    plan = track.plan(offsets=None, notifications=[done], snapshot_rows={})
    assert T in plan.completed and not plan.completed[T].reconcile


def test_rows_committed_before_the_started_notices_batch_do_not_make_it_reconcile() -> None:
    """The notice was polled while the lake held nothing of U; the snapshot's first rows of
    U went out in batches before the notice's own chunk was whole in one, so the record
    then knows U. None of those rows' keys were kept: reconciling would take them all for
    vanished and delete them (seen: a restarted initial snapshot deleted its first 100)."""
    track = tracker()
    started = note("STARTED", "Initial Snapshot", "i")
    track.polled([started])
    early = track.plan(offsets=None, notifications=[], snapshot_rows={U: 50})
    assert U not in early.seen
    early.finish({U: "0000000001e01f38000000000000000000000031"})
    track.adopt(early)  # the lake holds 50 rows of U now, none of their keys kept
    plan = track.plan(offsets=None, notifications=[started], snapshot_rows={U: 15})
    assert not plan.record.arming[U].reconcile and U not in plan.seen
    assert plan.record.arming[T].reconcile and plan.seen[T] == "i"  # T was held before


def test_keys_stay_kept_until_the_notices_own_batch_for_a_table_armed_before() -> None:
    """A table the parallel loader armed is in `armed` all along. A batch committed between
    the poll of a resync's STARTED notice and the batch of the notice's chunk must not end
    the early keeping: the next batch carries the snapshot's first rows (seen: their keys
    lost, 237 rows read by the resync deleted at its end as vanished)."""
    track = tracker(armed={T: "load-1"})
    started = note("STARTED", "Incremental Snapshot", data_collections="public.t")
    track.polled([started])
    between = track.plan(offsets=None, notifications=[], snapshot_rows={})
    assert between.seen == {T: "tidemark-resync-1"}
    track.adopt(between)
    first_rows = track.plan(offsets=None, notifications=[], snapshot_rows={T: 117})
    assert first_rows.seen == {T: "tidemark-resync-1"}
    track.adopt(first_rows)
    plan = track.plan(offsets=None, notifications=[started], snapshot_rows={T: 300})
    assert plan.record.arming[T].reconcile and plan.seen == {T: "tidemark-resync-1"}
    track.adopt(plan)
    assert track.plan(offsets=None, notifications=[], snapshot_rows={}).seen == {
        T: "tidemark-resync-1"  # from the record now
    }


def test_an_early_notice_of_a_scan_that_failed_is_void_once_its_end_committed() -> None:
    track = tracker(armed={T: "load-1"})
    started = note("STARTED", "Incremental Snapshot", data_collections="public.t")
    track.polled([started])
    failed = note(
        "TABLE_SCAN_COMPLETED",
        "Incremental Snapshot",
        scanned_collection="public.t",
        status="SQL_EXCEPTION",
    )
    plan = track.plan(offsets=None, notifications=[started, failed], snapshot_rows={})
    assert T not in plan.record.arming and plan.record.armed == {T: "load-1"}
    track.adopt(plan)
    assert not track.plan(offsets=None, notifications=[], snapshot_rows={}).seen


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

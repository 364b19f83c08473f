"""When the lake's record shows Debezium's initial snapshot complete (`tidemark/startup.py`).

A kill -9 right after the first streamed batch, before the batch holding the snapshot's
`COMPLETED` notice committed, once made the next start redo the initial snapshot on a new
slot: the changes streamed meanwhile lost their own events (the kill story found them
missing from the changelog, replaced by the re-snapshot's differences).
"""

from __future__ import annotations

import json

from tidemark.kernel.positions import Arming, SourceRecord
from tidemark.startup import initial_snapshot_done

_KEY = json.dumps(["engine", {"server": "bank"}])


def _record(offset: dict[str, object] | None, *, reconcile: bool | None = None) -> SourceRecord:
    record = SourceRecord("bank", offsets=None if offset is None else {_KEY: json.dumps(offset)})
    if reconcile is not None:
        record.arming["bank.public.items"] = Arming(
            "initial-1", "initial", "2026-12-07T00:00:00+00:00", reconcile
        )
    return record


def test_a_streamed_offset_means_the_initial_snapshot_is_done_even_before_its_completed() -> None:
    streamed = {"lsn": 123456, "txId": 800, "ts_usec": 1}
    assert initial_snapshot_done(_record(streamed))
    assert initial_snapshot_done(_record(streamed, reconcile=False))
    # a snapshot that reconciles has not closed the rows it did not read: taken again
    assert not initial_snapshot_done(_record(streamed, reconcile=True))


def test_offsets_without_a_position_or_inside_the_snapshot_are_not_done() -> None:
    assert not initial_snapshot_done(_record(None, reconcile=False))
    assert not initial_snapshot_done(_record({}, reconcile=False))  # the STARTED notice's
    assert not initial_snapshot_done(_record({"ts_usec": 0}, reconcile=False))
    inside = {"lsn": 123456, "snapshot": True, "last_snapshot_record": False}
    assert not initial_snapshot_done(_record(inside, reconcile=False))
    last = {"lsn": 123456, "snapshot": True, "last_snapshot_record": True}
    assert initial_snapshot_done(_record(last, reconcile=False))

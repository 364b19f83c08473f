"""A batch half committed by a killed process, then replayed with other contents.

`tidemark run` killed inside `Lake.commit_batch` can leave batch N in some layers without
the batch log. The next process re-forms its batches from what Debezium delivers again; its
batch N may hold more events (a later cut). If it reused the id N, every layer holding the
old N would skip the whole new batch by its Delta txn, and the events only the new batch
holds would be lost (seen as changes missing from the changelog after kill -9).
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa

from tests.support import crash_writer as cw
from tests.test_sinks_with_core import EVENT_SCHEMA
from tidemark.kernel import columns as c
from tidemark.kernel.model import TableChanges
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.embedded.runner import EmbeddedRunner
from tidemark.stream_processors.milestoning.core import milestone


class Killed(Exception):
    pass


def _event(key: int, position: int) -> dict:
    return {
        "id": key,
        "v": f"v{position}",
        "n": position,
        c.OP: "c" if position == key else "u",
        c.POSITION: f"{position:040x}",
        c.TX_ID: str(position),
        c.SOURCE_TS: cw.EPOCH + timedelta(seconds=position),
    }


def _commit(lake: Lake, batch_id: int, rows: list[dict]) -> None:
    events = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
    keys = pa.table({"id": pa.array(sorted({r["id"] for r in rows}), pa.int64())})
    mt = milestone(
        TableChanges(cw.TABLE, ("id",), events),
        lake.current_versions(cw.TABLE, keys),
        batch_id=batch_id,
        ingested_at=cw.EPOCH + timedelta(hours=batch_id),
        applied_position=lake.applied_position(cw.TABLE),
    )
    lake.commit_batch(
        batch_id, [mt], source_positions={"src": mt.last_position}, started_at=cw.EPOCH
    )


def _next_id(lake: Lake) -> int:
    """The id a runner started on this lake gives its first batch."""
    return EmbeddedRunner([], lake)._batcher.next_batch_id


def test_a_replayed_batch_never_reuses_the_id_of_a_half_committed_one(lake_root):
    root = lake_root()
    first = Lake(root, app_id="p")
    _commit(first, _next_id(first), [_event(1, 1), _event(2, 2)])

    def killed(*args, **kwargs):
        raise Killed  # every table layer of batch 2 is committed, the batch log is not

    first.batch_log.append = killed
    try:
        _commit(first, _next_id(first), [_event(1, 3)])
    except Killed:
        pass
    assert first.last_batch_id() == 1

    # the next process: Debezium re-delivers event 3 and, in the same batch, event 4
    again = Lake(root, app_id="p")
    batch_id = _next_id(again)
    _commit(again, batch_id, [_event(1, 3), _event(2, 4)])

    log = again.sink(cw.TABLE, c.Layer.CHANGELOG).handle.dt.to_pyarrow_table()
    positions = sorted(int(p, 16) for p in log.column(c.POSITION).to_pylist())
    assert positions == [1, 2, 3, 4]  # event 4 is there, event 3 once
    live = again.sink(cw.TABLE, c.Layer.LIVE).handle.dt.to_pyarrow_table()
    rows = sorted((r["id"], r["v"]) for r in live.select(["id", "v"]).to_pylist())
    assert rows == [(1, "v3"), (2, "v4")]
    assert batch_id == 3  # above the half-committed 2


def test_a_first_batch_killed_before_forensic_existed_is_completed_by_the_replay(lake_root):
    """Forensic (committed last) did not exist yet when the process died: the replay still
    fills it (the lake's watermark counts a layer that does not exist yet as holding nothing,
    not as absent; it used to drop the replay for every layer)."""
    root = lake_root()
    first = Lake(root, app_id="p")

    def killed(*args, **kwargs):
        raise Killed

    first.sink(cw.TABLE, c.Layer.FORENSIC).commit = killed
    try:
        _commit(first, _next_id(first), [_event(1, 1), _event(2, 2), _event(1, 3)])
    except Killed:
        pass
    assert first.sink(cw.TABLE, c.Layer.LIVE).handle.dt is not None
    assert first.sink(cw.TABLE, c.Layer.FORENSIC).handle.dt is None

    again = Lake(root, app_id="p")
    assert again.applied_position(cw.TABLE) is None
    _commit(again, _next_id(again), [_event(1, 1), _event(2, 2), _event(1, 3)])
    live = again.sink(cw.TABLE, c.Layer.LIVE).handle.dt.to_pyarrow_table()
    assert sorted((r["id"], r["v"]) for r in live.select(["id", "v"]).to_pylist()) == [
        (1, "v3"),
        (2, "v2"),
    ]
    forensic = again.sink(cw.TABLE, c.Layer.FORENSIC).handle.dt.to_pyarrow_table()
    assert sorted(forensic.column(c.POSITION).to_pylist()) == [f"{p:040x}" for p in (1, 2, 3)]
    changelog = again.sink(cw.TABLE, c.Layer.CHANGELOG).handle.dt.to_pyarrow_table()
    assert changelog.num_rows == 3


def test_a_failed_live_commit_waits_for_the_changelog_beside_it(lake_root):
    """Changelog and live commit side by side; when live fails, commit_batch returns only
    after the changelog's commit has finished (nothing keeps writing behind a failure)."""
    lake = Lake(lake_root(), app_id="p")

    def killed(*args, **kwargs):
        raise Killed

    lake.sink(cw.TABLE, c.Layer.LIVE).commit = killed
    try:
        _commit(lake, _next_id(lake), [_event(1, 1), _event(2, 2)])
    except Killed:
        pass
    changelog = lake.sink(cw.TABLE, c.Layer.CHANGELOG).handle
    assert changelog.dt is not None and changelog.dt.to_pyarrow_table().num_rows == 2
    assert lake.sink(cw.TABLE, c.Layer.FORENSIC).handle.dt is None

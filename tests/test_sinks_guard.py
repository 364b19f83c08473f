"""The replay guard in the sinks: each layer records per stream the highest source position
it applied (its watermark, in Delta txn actions), keeps only the rows above it, and the
watermark outlives the commit log. Real Delta tables."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.pipeline.test_batch_ids import Killed, _commit, _event, _next_id
from tests.support import crash_writer as cw
from tidemark.kernel import columns as c
from tidemark.kernel.model import TableChanges
from tidemark.sinks.base import StreamCommit
from tidemark.sinks.errors import SinkError
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.milestoning.core import milestone


def _rows(lake: Lake, layer: c.Layer) -> list[tuple]:
    table = lake.sink(cw.TABLE, layer).handle.dt.to_pyarrow_table()
    return sorted((r["id"], r["v"]) for r in table.select(["id", "v"]).to_pylist())


def test_a_layer_ahead_after_a_crash_keeps_its_rows(lake_root):
    """Changelog and live hold batch 2, forensic does not (the process died before it).
    The next process re-forms the batch from a shorter cut of what Debezium delivers again:
    live must not go back to the older row, the changelog must not take event 3 twice."""
    root = lake_root()
    first = Lake(root, app_id="p")
    _commit(first, _next_id(first), [_event(1, 1)])

    def killed(*args, **kwargs):
        raise Killed

    first.sink(cw.TABLE, c.Layer.FORENSIC).commit = killed
    with pytest.raises(Killed):
        _commit(first, _next_id(first), [_event(1, 3), _event(1, 4)])
    assert _rows(first, c.Layer.LIVE) == [(1, "v4")]

    again = Lake(root, app_id="p")
    assert again.applied_position(cw.TABLE) == f"{1:040x}"  # forensic's: the lowest layer
    _commit(again, _next_id(again), [_event(1, 3)])  # a shorter cut: event 3 only
    assert _rows(again, c.Layer.LIVE) == [(1, "v4")], "live went back to an older row"
    _commit(again, _next_id(again), [_event(1, 4), _event(1, 5)])
    assert _rows(again, c.Layer.LIVE) == [(1, "v5")]
    positions = again.sink(cw.TABLE, c.Layer.CHANGELOG).handle.dt.to_pyarrow_table()
    assert sorted(int(p, 16) for p in positions.column(c.POSITION).to_pylist()) == [1, 3, 4, 5]
    forensic = _rows(again, c.Layer.FORENSIC)
    assert forensic == [(1, "v1"), (1, "v3"), (1, "v4"), (1, "v5")]


def _batch(rows: list[dict], lake: Lake, batch_id: int, watermark=None):
    events = pa.Table.from_pylist(rows, schema=_event_schema())
    keys = pa.table({"id": pa.array(sorted({r["id"] for r in rows}), pa.int64())})
    return milestone(
        TableChanges(cw.TABLE, ("id",), events),
        lake.current_versions(cw.TABLE, keys),
        batch_id=batch_id,
        ingested_at=cw.EPOCH + timedelta(hours=1),
        applied_position=watermark,
    )


def _event_schema() -> pa.Schema:
    from tests.test_sinks_with_core import EVENT_SCHEMA

    return EVENT_SCHEMA


def test_one_commit_records_each_streams_txn_and_watermark(lake_root):
    """Two Kafka partitions in one commit per layer: each has its own txn version and
    watermark, read back by a new process, and a replay of either is dropped."""
    root = lake_root()
    lake = Lake(root, app_id="w:topic")
    a, b = "w:topic:0", "w:topic:1"
    mt = _batch([_event(1, 1), _event(2, 2), _event(1, 3), _event(2, 4)], lake, 1 << 12)
    streams = [StreamCommit(a, 7 << 12, f"{3:040x}"), StreamCommit(b, 5 << 12 | 1, f"{4:040x}")]
    lake.commit_batch(
        1 << 12,
        [mt],
        source_positions={cw.TABLE: mt.last_position},
        started_at=cw.EPOCH,
        streams=streams,
    )
    again = Lake(root, app_id="w:topic")
    for layer in c.Layer:
        assert again.applied_batch(cw.TABLE, layer, a) == 7 << 12
        assert again.applied_batch(cw.TABLE, layer, b) == 5 << 12 | 1
    assert again.applied_position(cw.TABLE, stream=a) == f"{3:040x}"
    assert again.applied_position(cw.TABLE, stream=b) == f"{4:040x}"
    # partition 0's events again, at new offsets: its watermark drops them
    replay = _batch([_event(1, 1), _event(1, 3)], again, 9 << 12, f"{3:040x}")
    assert replay.changelog.num_rows == 0 and replay.forensic_inserts.num_rows == 0
    # a stream whose layers a crash left apart cannot join a commit of several streams
    ahead = [StreamCommit(a, 8 << 12, f"{5:040x}")]
    more = _batch([_event(1, 5)], again, 8 << 12)
    changelog = again.sink(cw.TABLE, c.Layer.CHANGELOG)
    changelog.write(
        more, batch_id=8 << 12, streams=[s.in_layer(cw.TABLE, "changelog") for s in ahead]
    )
    changelog.commit()
    with pytest.raises(SinkError, match="layers at different positions"):
        again.commit_batch(
            8 << 12,
            [more],
            source_positions={},
            started_at=cw.EPOCH,
            streams=[*ahead, StreamCommit(b, 6 << 12 | 1, None)],
        )


def test_a_watermark_outlives_the_commit_log(lake_root):
    """A stream idle while others commit keeps its watermark after the log files that held
    its commit are cleaned up (commit metadata would be gone with them)."""
    root = lake_root()
    lake = Lake(root, app_id="w:topic")
    quiet, busy = "w:topic:0", "w:topic:1"
    mt = _batch([_event(1, 1)], lake, 1 << 12)
    lake.commit_batch(
        1 << 12,
        [mt],
        source_positions={},
        started_at=cw.EPOCH,
        layers={cw.TABLE: frozenset({c.Layer.CHANGELOG})},
        streams=[StreamCommit(quiet, 1 << 12, f"{1:040x}")],
    )
    for n in range(2, 14):
        mt = _batch([_event(100 + n, 100 + n)], lake, n << 12 | 1)
        lake.commit_batch(
            n << 12 | 1,
            [mt],
            source_positions={},
            started_at=cw.EPOCH,
            layers={cw.TABLE: frozenset({c.Layer.CHANGELOG})},
            streams=[StreamCommit(busy, n << 12 | 1, f"{100 + n:040x}")],
        )
    uri = lake.sink(cw.TABLE, c.Layer.CHANGELOG).handle.uri
    dt = DeltaTable(uri)
    dt.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"})
    dt.create_checkpoint()
    dt.cleanup_metadata()
    dt = DeltaTable(uri)
    kept = [h.get("tidemark.app") for h in dt.history()]
    assert f"{quiet}:{cw.TABLE}:changelog" not in kept, "the quiet stream's commit is gone"
    again = Lake(root, app_id="w:topic")
    only = frozenset({c.Layer.CHANGELOG})
    assert again.applied_position(cw.TABLE, only, stream=quiet) == f"{1:040x}"
    assert again.applied_position(cw.TABLE, only, stream=busy) == f"{113:040x}"

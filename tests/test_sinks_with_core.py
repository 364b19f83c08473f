"""The sinks driven by the real core (`milestone`), as the runtimes do, against the
reference milestoner used elsewhere in the sink tests: the same lake must come out."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa

from tests.support import crash_writer as cw
from tests.support.lakes import Driver
from tidemark.kernel import columns as c
from tidemark.kernel.model import TableChanges
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.milestoning.core import milestone

EVENT_SCHEMA = pa.schema(
    [
        *cw.SCHEMA,
        (c.OP, pa.string()),
        (c.POSITION, pa.string()),
        (c.TX_ID, pa.string()),
        (c.SOURCE_TS, pa.timestamp("us", tz="UTC")),
    ]
)


def run_with_core(lake: Lake, batches: list[list[dict]]) -> None:
    for batch_id in range(lake.last_batch_id() + 1, len(batches) + 1):
        events = pa.Table.from_pylist(batches[batch_id - 1], schema=EVENT_SCHEMA)
        keys = pa.table({"id": pa.array(sorted(set(events.column("id").to_pylist())), pa.int64())})
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


def test_core_and_reference_build_the_same_lake(lake_root):
    batches = cw.workload(6, per_batch=800)
    reference = Lake(lake_root(), app_id="ref")
    cw.run(reference, batches)
    real = Lake(lake_root(), app_id="core")
    run_with_core(real, batches)
    ref, got = Driver(reference, cw.TABLE, cw.SCHEMA), Driver(real, cw.TABLE, cw.SCHEMA)
    assert got.read("live") == ref.read("live")
    assert got.read("forensic") == ref.read("forensic")
    fields = ("id", "v", c.OP, c.POSITION, c.BATCH)
    assert [tuple(r[f] for f in fields) for r in got.read("changelog")] == [
        tuple(r[f] for f in fields) for r in ref.read("changelog")
    ]
    # replaying every batch through the core, under its old id and under a new one
    # (a runtime that rebuilt its batches after a crash), changes nothing
    before = {layer: got.read(layer) for layer in ("live", "forensic", "changelog")}
    again = Lake(real.root, app_id="core")
    for offset in (0, len(batches)):
        for batch_id, events in enumerate(batches, start=1):
            table = pa.Table.from_pylist(events, schema=EVENT_SCHEMA)
            keys = pa.table(
                {"id": pa.array(sorted(set(table.column("id").to_pylist())), pa.int64())}
            )
            mt = milestone(
                TableChanges(cw.TABLE, ("id",), table),
                again.current_versions(cw.TABLE, keys),
                batch_id=batch_id + offset,
                ingested_at=cw.EPOCH,
                applied_position=again.applied_position(cw.TABLE),
            )
            again.commit_batch(batch_id + offset, [mt], source_positions={}, started_at=cw.EPOCH)
    assert {layer: got.read(layer) for layer in before} == before

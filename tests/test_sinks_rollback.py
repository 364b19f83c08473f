"""A batch a killed process left in some layers but never logged is rolled back at start.

The batch log is the lake's commit point (written last; it holds the lake's record of each
source). When what a restart brings differs from the half-applied batch (a snapshot redone
on a new slot, rows gone meanwhile), replaying cannot complete it: `Lake.roll_back_unlogged`
puts every layer back to the logged batches, positions included, and the next batches apply
to a consistent lake. Real Delta tables, no services.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.support.milestones import event, milestone_rows
from tidemark.kernel.columns import Layer
from tidemark.sinks.delta.dv.log import LogState
from tidemark.sinks.delta.dv.store import open_store
from tidemark.sinks.lake import Lake
from tidemark.sinks.readers import count_rows, read_table

TABLE = "src.public.items"
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _batch(lake: Lake, batch_id: int, events: list[dict]):
    keys = pa.table({"id": pa.array(sorted({e["id"] for e in events}), pa.int64())})
    current = lake.current_versions(TABLE, keys)
    return milestone_rows(TABLE, ("id",), SCHEMA, events, current, batch_id=batch_id)


def _rows(root: str, layer: str) -> list[tuple]:
    table = read_table(DeltaTable(f"{root}/{layer}/{TABLE}"))  # applies deletion vectors
    columns = ["id", "v", "_tm_position"]
    return sorted(
        (tuple(r[c] for c in columns) for r in table.select(columns).to_pylist()), key=repr
    )


@pytest.mark.parametrize("mode", ["copy_on_write", "merge_on_read"])
def test_layers_ahead_of_the_batch_log_are_rolled_back(lake_root, mode) -> None:
    """Also in merge-on-read: the rows batch 2 marked deleted in deletion vectors are alive
    again after the roll-back (a restore must bring back each file's older DV)."""
    root = lake_root()
    lake = Lake(root, app_id="t", write_modes={"*": mode})
    first = [event("r", f"{1:040x}", T0, tx=None, id=k, v=f"v{k}") for k in range(1, 6)]
    lake.commit_batch(
        1, [_batch(lake, 1, first)], source_positions={"src": f"{5:040x}"}, started_at=T0
    )
    logged = {layer: _rows(root, layer) for layer in ("changelog", "live", "forensic")}
    # batch 2 reaches the changelog and live, then the process dies (forensic, log: never)
    half = [
        event("r", f"{9:040x}", T0 + timedelta(seconds=1), tx=None, id=k, v=f"w{k}")
        for k in (1, 2, 6, 7)  # some rows of batch 1's file: a deletion vector in MoR
    ]
    doomed = _batch(lake, 2, half)
    for layer in (Layer.CHANGELOG, Layer.LIVE):
        sink = lake.sink(TABLE, layer)
        sink.write(doomed, batch_id=2)
        sink.commit()
    lake.close()
    assert _rows(root, "live") != logged["live"]
    if mode == "merge_on_read":  # batch 2 went into live as deletion vectors
        state = LogState.load(open_store(f"{root}/live/{TABLE}"))
        assert any(entry.dv is not None for entry in state.files.values())

    restarted = Lake(root, app_id="t", write_modes={"*": mode})
    rolled = restarted.roll_back_unlogged([TABLE])
    assert sorted(rolled) == [f"{TABLE}/changelog", f"{TABLE}/live"]
    for layer, rows in logged.items():
        assert _rows(root, layer) == rows, layer
    assert restarted.applied_position(TABLE) == max(r[2] for r in logged["live"])
    assert restarted.roll_back_unlogged([TABLE]) == []  # nothing left to undo

    # what comes instead (another batch: key 2 changed, key 3 gone) applies to every layer
    instead = [
        event("u", f"{12:040x}", T0 + timedelta(seconds=2), tx="9", id=2, v="x2"),
        event("d", f"{13:040x}", T0 + timedelta(seconds=2), tx="9", id=3, v=None),
    ]
    restarted.commit_batch(
        restarted.highest_batch_id() + 1,
        [_batch(restarted, 3, instead)],
        source_positions={"src": f"{13:040x}"},
        started_at=T0,
    )
    live = {r[0]: r[1] for r in _rows(root, "live")}
    assert live == {1: "v1", 2: "x2", 4: "v4", 5: "v5"}
    assert len(_rows(root, "live")) == 4  # no key twice: batch 3 found the restored rows
    assert count_rows(f"{root}/live/{TABLE}") == 4
    forensic = read_table(DeltaTable(f"{root}/forensic/{TABLE}")).to_pylist()
    open_ = {r["id"]: r["v"] for r in forensic if r["_tm_valid_to"] is None}
    assert open_ == live
    assert {r[0] for r in _rows(root, "changelog")} == {1, 2, 3, 4, 5}

"""Merge-on-read (issue 17): the same logical tables as copy-on-write, written as deletion
vectors; every DV-applying reader reads them exactly; crashes, concurrent writers and the
writer mistakes that corrupt a DV table are handled or refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyroaring import BitMap64

from tests.support import crash_writer as cw
from tests.support.lakes import Driver
from tests.support.readers import ENGINES, read_every_way
from tidemark.kernel import columns as c
from tidemark.kernel.columns import Layer
from tidemark.sinks.delta.dv.commit import DvTable, InvalidDvCommit, check_actions, remove_json
from tidemark.sinks.delta.dv.log import LogState, read_commit
from tidemark.sinks.delta.dv.store import open_store
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.lake import Lake
from tidemark.sinks.readers import count_rows, read_table

REPO = Path(__file__).resolve().parents[1]
MOR = {"*": "merge_on_read"}
LAYERS = ("changelog", "live", "forensic")


def tables(lake: Lake) -> dict[str, list[dict]]:
    d = Driver(lake, cw.TABLE, cw.SCHEMA)
    return {layer: d.read(layer) for layer in LAYERS}


def uri(lake: Lake, layer: str) -> str:
    return table_uri(lake.root, layer, cw.TABLE)


def actions_of(path: str) -> list[dict]:
    store = open_store(path)
    state = LogState.load(store)
    return [a for v in range(state.version + 1) for a in read_commit(store, v)]


def logical(rows: list[dict]) -> list[dict]:
    return sorted(
        ({k: v for k, v in r.items() if k not in (c.BUCKET, c.CURRENT)} for r in rows),
        key=lambda r: tuple((v is None, str(v)) for v in r.values()),
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The crash writer's workload in both modes (8 batches of 1,500 changes)."""
    batches = cw.workload(8)
    lakes = {}
    for mode in ("copy_on_write", "merge_on_read"):
        lake = Lake(str(tmp_path_factory.mktemp(mode)), app_id="mor", write_modes={"*": mode})
        cw.run(lake, batches)
        lakes[mode] = lake
    yield lakes
    for lake in lakes.values():
        lake.close()


def test_both_modes_give_identical_logical_tables(built):
    cow, mor = tables(built["copy_on_write"]), tables(built["merge_on_read"])
    for layer in LAYERS:
        assert logical(mor[layer]) == logical(cow[layer]), layer
    assert len(mor["forensic"]) > len(mor["live"]) > 1000


def test_merge_on_read_deletes_by_dv_and_rewrites_nothing(built):
    lake = built["merge_on_read"]
    for layer in ("live", "forensic"):
        actions = actions_of(uri(lake, layer))
        added = [a["add"] for a in actions if "add" in a]
        removed = [a["remove"] for a in actions if "remove" in a]
        assert any(a.get("deletionVector") for a in added), layer
        # every remove re-adds the same file with a bigger DV: no data file was rewritten
        readded = {a["path"] for a in added if a.get("deletionVector")}
        assert {r["path"] for r in removed} <= readded
        for remove in removed:
            assert json.loads(remove.get("stats") or "{}") == {}  # we never copy stats there
        state = LogState.load(open_store(uri(lake, layer)))
        assert state.dv_enabled()
        assert state.protocol["readerFeatures"] == ["deletionVectors"]
    # the layout: live unpartitioned, forensic by `_tm_current` only, no buckets
    assert DeltaTable(uri(lake, "live")).metadata().partition_columns == []
    assert DeltaTable(uri(lake, "forensic")).metadata().partition_columns == [c.CURRENT]


@pytest.mark.parametrize("mode", ["copy_on_write", "merge_on_read"])
def test_start_up_reconciliation_sees_the_keys_deletion_vectors_leave(built, mode):
    """`Lake.open_keys` (what a re-snapshot compares with what it saw) and `holds_rows` read
    the layers with DVs applied: each live key once, none a DV deleted."""
    lake = built[mode]
    live = sorted(r["id"] for r in tables(lake)["live"])
    assert len(live) == len(set(live)) > 1000
    full = frozenset(Layer)
    for layers in (full, frozenset({Layer.LIVE})):
        keys = lake.open_keys(cw.TABLE, ["id"], layers)
        assert keys is not None
        assert sorted(keys.column("id").to_pylist()) == live, layers
    assert lake.holds_rows(cw.TABLE, full)


@pytest.mark.parametrize("mode", ["copy_on_write", "merge_on_read"])
def test_whole_table_reads_keep_the_tables_types(built, mode):
    """delta-rs `scan()` answers strings as `string_view`; Tidemark's reads of a DV table
    come back as `string`, like a pyarrow dataset's (a DDL step concatenates them with a
    batch's rows)."""
    lake = built[mode]
    for layer in (Layer.LIVE, Layer.FORENSIC):
        rows = lake.sink(cw.TABLE, layer).handle.read()
        assert rows.schema.field("v").type == pa.string(), layer
        whole = read_table(DeltaTable(uri(lake, layer.value)), columns=["id", "v"])
        assert whole.schema.field("v").type == pa.string(), layer


@pytest.mark.parametrize("mode", ["copy_on_write", "merge_on_read"])
@pytest.mark.parametrize("layer", LAYERS)
def test_every_reader_reads_every_table_exactly(built, mode, layer):
    lake = built[mode]
    answers = read_every_way(uri(lake, layer))
    assert set(answers) == set(ENGINES)
    expected = logical(Driver(lake, cw.TABLE, cw.SCHEMA).read(layer, keep_physical=True))
    for engine, rows in answers.items():
        assert logical(rows) == expected, engine
    # what Tidemark counts with (status), against what DeltaTable.count() would say
    assert count_rows(uri(lake, layer)) == len(expected)
    if mode == "merge_on_read" and layer != "changelog":
        assert DeltaTable(uri(lake, layer)).count() > len(expected)  # why we never use it


def test_query_reads_merge_on_read_tables_with_duckdb(built):
    from tidemark.query import connect, run_query

    for mode, lake in built.items():
        con = connect(lake.root)
        live = run_query(con, "SELECT count(*) AS n, sum(n) AS s FROM live.items").to_pylist()
        rows = tables(lake)["live"]
        assert live == [{"n": len(rows), "s": sum(r["n"] for r in rows)}], mode
        forensic = run_query(con, 'SELECT count(*) AS n FROM forensic."crash.public.items"')
        assert forensic.to_pylist() == [{"n": len(tables(lake)["forensic"])}], mode


def test_crash_between_dv_file_and_commit_then_replay(lake_root, built):
    root = lake_root()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    died = subprocess.run(
        [sys.executable, "-m", "tests.support.crash_writer", root, "8", "merge_on_read", "3"],
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert died.returncode == 9
    assert Path(root + ".progress").read_text() == "2"
    live = table_uri(root, "live", cw.TABLE)
    referenced = {
        a["add"]["deletionVector"]["pathOrInlineDv"]
        for a in actions_of(live)
        if "add" in a and a["add"].get("deletionVector")
    }
    written = [p for p in os.listdir(live) if p.startswith("deletion_vector_")]
    assert len(written) == len(referenced) + 1  # the DV file of the batch that died
    answers = read_every_way(live)  # still readable, by every engine, at batch 2
    assert all(rows == answers["scan"] for rows in answers.values())
    again = subprocess.run(
        [sys.executable, "-m", "tests.support.crash_writer", root, "8", "merge_on_read"],
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0
    lake = Lake(root, app_id="crash")
    assert {k: logical(v) for k, v in tables(lake).items()} == {
        k: logical(v) for k, v in tables(built["copy_on_write"]).items()
    }


def test_remove_without_old_dv_and_reused_dv_id_are_refused(lake_root):
    lake = Lake(lake_root(), app_id="guard", write_modes=MOR)
    cw.run(lake, cw.workload(3))
    table = DvTable(uri(lake, "live"))
    with_dv = next(e for e in table.state.files.values() if e.dv is not None)
    other = next(e for e in table.state.files.values() if e.path != with_dv.path)
    # the mistake that leaves the old file alive: a remove without the DV it carries now
    bare = remove_json(with_dv, 0)
    del bare["deletionVector"]
    with pytest.raises(InvalidDvCommit, match="without its current DV"):
        check_actions(table.state, [{"remove": bare}])
    # the mistake that drops a whole file: a DV id the table already holds
    stolen = {**other.add, "deletionVector": with_dv.dv.to_json()}
    with pytest.raises(InvalidDvCommit, match="is used already"):
        check_actions(table.state, [{"remove": remove_json(other, 0)}, {"add": stolen}])
    # by construction: a commit built by DvTable carries the current DV in every remove
    before = table.state.files[with_dv.path].dv
    table.commit(deletes={with_dv.path: BitMap64([0])}, txns={"other": 1})
    last = read_commit(table.store, table.state.version)
    remove = next(a["remove"] for a in last if "remove" in a)
    assert remove["deletionVector"] == before.to_json()
    add = next(a["add"] for a in last if "add" in a)
    assert add["deletionVector"]["pathOrInlineDv"] != before.path_or_inline


def test_commit_after_a_concurrent_append_is_rebased(lake_root):
    lake = Lake(lake_root(), app_id="rebase", write_modes=MOR)
    cw.run(lake, cw.workload(2))
    path = uri(lake, "live")
    table = DvTable(path)  # its state is now one version behind the append below
    row = read_every_way(path)["scan"][0]
    extra = pa.Table.from_pylist(
        [{**row, "id": 10**9}], schema=pa.schema(DeltaTable(path).schema().to_arrow())
    )
    write_deltalake(path, extra, mode="append")  # another writer appends a file
    victim = next(iter(table.state.files.values()))
    before = len(read_every_way(path)["scan"])
    table.commit(deletes={victim.path: BitMap64([0])}, txns={"x": 1})
    assert table.state.version == DeltaTable(path).version()
    answers = read_every_way(path)
    assert len(answers["scan"]) == before - 1
    assert all(rows == answers["scan"] for rows in answers.values())


def test_commit_after_a_concurrent_compaction_is_recomputed(lake_root, built):
    lake = Lake(lake_root(), app_id="crash", write_modes=MOR)
    batches = cw.workload(8)
    cw.run(lake, batches[:3])
    compactions = []

    def compact_first() -> None:
        if not compactions:
            compactions.append(DeltaTable(uri(lake, "live")).optimize.compact())

    for layer in (Layer.LIVE, Layer.FORENSIC):
        sink = lake.sink(cw.TABLE, layer)
        assert sink.mor is not None and sink.mor.table.dv is not None
        sink.mor.table.dv.before_commit = compact_first  # runs after the rows were located
    cw.run(lake, batches)
    assert compactions and compactions[0]["numFilesRemoved"] > 0
    assert {k: logical(v) for k, v in tables(lake).items()} == {
        k: logical(v) for k, v in tables(built["copy_on_write"]).items()
    }


def test_checkpoint_keeps_deletion_vectors(built):
    path = uri(built["merge_on_read"], "forensic")
    before = LogState.load(open_store(path))
    DeltaTable(path).create_checkpoint()
    after = LogState.load(open_store(path))
    assert {p: e.dv for p, e in after.files.items()} == {p: e.dv for p, e in before.files.items()}
    assert any(e.dv is not None for e in after.files.values())
    answers = read_every_way(path)
    assert all(rows == answers["scan"] for rows in answers.values())


@pytest.mark.s3
def test_put_if_absent_on_s3(s3_lake):
    root, options = s3_lake()
    store = open_store(root + "/t", options)
    assert store.put_if_absent("_delta_log/00000000000000000000.json", b"first")
    assert not store.put_if_absent("_delta_log/00000000000000000000.json", b"second")
    assert store.get("_delta_log/00000000000000000000.json") == b"first"
    assert [e.path for e in store.list_folder("_delta_log/")] == [
        "_delta_log/00000000000000000000.json"
    ]


def dv_files_in_use(path: str) -> int:
    return sum(1 for e in LogState.load(open_store(path)).files.values() if e.dv is not None)


def test_compaction_folds_dvs_while_the_writer_goes_on(lake_root, built):
    from tidemark.sinks.delta.dv.compaction import Policy, collect, fold

    lake = Lake(lake_root(), app_id="crash", write_modes=MOR)
    batches = cw.workload(8)
    cw.run(lake, batches[:5])
    policy = Policy(max_deleted=0.01, min_files=2)
    live, forensic = uri(lake, "live"), uri(lake, "forensic")
    assert dv_files_in_use(live) > 0 and dv_files_in_use(forensic) > 0
    assert fold(live, policy=policy) > 0
    assert fold(forensic, scope={c.CURRENT: "true"}, policy=policy) > 0
    assert dv_files_in_use(live) == 0 and dv_files_in_use(forensic) == 0
    history = [e for e in LogState.load(open_store(forensic)).files.values() if e.partition_values]
    assert all(e.partition_values[c.CURRENT] in ("true", "false") for e in history)
    cw.run(lake, batches)  # the writer finds its rows in the compacted files
    expected = {k: logical(v) for k, v in tables(built["copy_on_write"]).items()}
    assert {k: logical(v) for k, v in tables(lake).items()} == expected
    # the DV files the compaction left unused go; those in use stay
    in_use = dv_files_in_use(live)
    assert collect(live, retention_hours=0) > 0
    assert dv_files_in_use(live) == in_use
    names = [p for p in os.listdir(live) if p.startswith("deletion_vector_")]
    assert len(names) == len(
        {e.dv.path_or_inline for e in LogState.load(open_store(live)).files.values() if e.dv}
    )
    for layer in ("live", "forensic"):
        answers = read_every_way(uri(lake, layer))
        assert all(logical(rows) == expected[layer] for rows in answers.values()), layer


def test_maintenance_thread_looks_after_merge_on_read_layers(lake_root, built):
    from tidemark.sinks import maintenance

    lake = Lake(lake_root(), app_id="crash", write_modes=MOR, maintenance=True)
    assert lake.maintenance is not None
    kinds = []
    original = maintenance.compact

    def watched(uri, kind, **kwargs):
        kinds.append(kind)
        return original(uri, kind, **kwargs)

    maintenance.compact = watched
    try:
        batches = cw.workload(8)
        cw.run(lake, batches[:4])
        lake.wait_idle()
        cw.run(lake, batches)
        lake.wait_idle()
    finally:
        maintenance.compact = original
        lake.close()
    assert {"mor_live", "mor_forensic", "append"} <= set(kinds)
    expected = {k: logical(v) for k, v in tables(built["copy_on_write"]).items()}
    assert {k: logical(v) for k, v in tables(Lake(lake.root, app_id="crash")).items()} == expected


def test_vacuum_on_a_dv_table_never_deletes_dv_files_in_use(built):
    from tidemark.sinks.maintenance import vacuum

    path = uri(built["merge_on_read"], "live")
    in_use = dv_files_in_use(path)
    vacuum(path, retention_hours=0)
    assert dv_files_in_use(path) == in_use
    answers = read_every_way(path)  # every DV still found
    assert all(rows == answers["scan"] for rows in answers.values())


def test_collect_keeps_files_given_up_within_the_retention(lake_root):
    from datetime import UTC, datetime, timedelta

    from tidemark.sinks.delta.dv.compaction import Policy, collect, fold

    lake = Lake(lake_root(), app_id="gc", write_modes=MOR)
    cw.run(lake, cw.workload(4))
    live = uri(lake, "live")
    week_ago = (datetime.now(UTC) - timedelta(days=7)).timestamp()
    for folder, _, names in os.walk(live):
        for name in names:
            os.utime(os.path.join(folder, name), (week_ago, week_ago))  # written long ago
    assert fold(live, policy=Policy(max_deleted=0.0, min_files=1)) > 0  # given up just now
    assert collect(live, retention_hours=24) == 0  # a reader of the last day may need them
    later = datetime.now(UTC) + timedelta(days=2)
    assert collect(live, retention_hours=24, now=later) > 0
    answers = read_every_way(live)
    assert all(rows == answers["scan"] for rows in answers.values())


def test_a_new_source_column_in_merge_on_read(lake_root):
    from tests.support.milestones import event, pos, ts

    v1 = pa.schema([("id", pa.int64()), ("name", pa.string())])
    v2 = pa.schema([("id", pa.int64()), ("name", pa.string()), ("email", pa.string())])
    lake = Lake(lake_root(), app_id="schema", write_modes=MOR)
    d = Driver(lake, "s.p.t", v1)
    d.run([event("c", pos(1), ts(1), id=1, name="a"), event("c", pos(2), ts(2), id=2, name="b")])
    d.run([event("u", pos(3), ts(3), id=1, name="a2", email="a@x")], schema=v2)
    assert [(r["id"], r["name"], r["email"]) for r in d.read("live")] == [
        (1, "a2", "a@x"),
        (2, "b", None),
    ]
    d.run([event("u", pos(4), ts(4), id=2, name="b2", email="b@x")], schema=v2)
    forensic = [(r["id"], r["name"], r["email"], r[c.VALID_TO] is None) for r in d.read("forensic")]
    assert forensic == [
        (1, "a", None, False),
        (1, "a2", "a@x", True),
        (2, "b", None, False),
        (2, "b2", "b@x", True),
    ]
    answers = read_every_way(table_uri(lake.root, "forensic", "s.p.t"))
    assert all(rows == answers["scan"] for rows in answers.values())


def test_the_writer_checkpoints_and_a_new_writer_starts_from_it(lake_root, built, monkeypatch):
    from tidemark.sinks.delta.dv import layer

    monkeypatch.setattr(layer, "CHECKPOINT_EVERY", 3)
    lake = Lake(lake_root(), app_id="crash", write_modes=MOR)
    batches = cw.workload(8)
    cw.run(lake, batches[:5])
    lake.close()
    for name in ("live", "forensic"):
        assert os.path.exists(os.path.join(uri(lake, name), "_delta_log", "_last_checkpoint"))
    again = Lake(lake.root, app_id="crash")  # replays from the checkpoint, DVs included
    cw.run(again, batches)
    expected = {k: logical(v) for k, v in tables(built["copy_on_write"]).items()}
    assert {k: logical(v) for k, v in tables(again).items()} == expected


def test_compaction_carries_over_rows_a_writer_deletes_meanwhile(lake_root, built, monkeypatch):
    from tidemark.sinks.delta.dv import compaction

    lake = Lake(lake_root(), app_id="crash", write_modes=MOR)
    batches = cw.workload(8)
    cw.run(lake, batches[:4])
    rewrite = compaction._rewrite

    def rewrite_then_let_the_writer_commit(*args, **kwargs):
        moved = rewrite(*args, **kwargs)
        cw.run(lake, batches[:6])  # deletes rows of the files being compacted
        return moved

    monkeypatch.setattr(compaction, "_rewrite", rewrite_then_let_the_writer_commit)
    policy = compaction.Policy(max_deleted=0.0, min_files=1)
    assert compaction.fold(uri(lake, "live"), policy=policy) > 0
    state = LogState.load(open_store(uri(lake, "live")))
    assert any(e.dv is not None and e.add["dataChange"] for e in state.files.values())
    cw.run(lake, batches)
    expected = {k: logical(v) for k, v in tables(built["copy_on_write"]).items()}
    assert {k: logical(v) for k, v in tables(lake).items()} == expected


def test_dvs_on_files_known_from_a_checkpoint_of_an_unpartitioned_table(lake_root):
    """A checkpoint's empty partitionValues map reads back as an empty list; re-emitted as
    a list, delta-rs could no longer load the table (found by the 10M-row benchmark)."""
    lake = Lake(lake_root(), app_id="cp", write_modes=MOR)
    cw.run(lake, cw.workload(3))
    live = uri(lake, "live")
    DeltaTable(live).create_checkpoint()
    table = DvTable(live)  # its state comes from the checkpoint
    entry = next(iter(table.state.files.values()))
    assert entry.partition_values == {}
    table.commit(deletes={entry.path: BitMap64([0])}, txns={"other": 1})
    DeltaTable(live).update_incremental()  # delta-rs loads the commit
    answers = read_every_way(live)
    assert all(rows == answers["scan"] for rows in answers.values())
    bad = {**remove_json(entry, 0), "partitionValues": []}
    with pytest.raises(InvalidDvCommit, match="partitionValues"):
        check_actions(table.state, [{"remove": bad}])


def test_a_batch_whose_commit_landed_before_the_attempt_failed_is_not_committed_twice(
    lake_root, built, monkeypatch
):
    from tidemark.sinks.delta.table import DeltaHandle
    from tidemark.sinks.errors import SinkUnavailable

    lake = Lake(lake_root(), app_id="crash", write_modes=MOR)
    batches = cw.workload(8)
    cw.run(lake, batches[:4])
    record = DeltaHandle.record_commit
    failures = []

    def fail_once(self, batch_id, position):
        if batch_id == 5 and self.uri.endswith(f"live/{cw.TABLE}") and not failures:
            failures.append(batch_id)
            raise SinkUnavailable("delta-rs could not read the log back", table=self.uri)
        return record(self, batch_id, position)

    monkeypatch.setattr(DeltaHandle, "record_commit", fail_once)
    with pytest.raises(SinkUnavailable):
        cw.run(lake, batches[:5])
    cw.run(lake, batches)  # the runtime retries the batch
    assert failures == [5]
    expected = {k: logical(v) for k, v in tables(built["copy_on_write"]).items()}
    assert {k: logical(v) for k, v in tables(lake).items()} == expected


def test_a_removed_file_never_hands_its_cache_key_to_another(lake_root):
    """Keys were `len(ids)`: after a compaction removed a file, the next new file took the
    key of a file still cached, and lookups read another file's rows (found by the schema
    change stories in merge-on-read: `Index 8 out of bounds`)."""
    lake = Lake(lake_root(), app_id="ids", write_modes=MOR)
    cw.run(lake, cw.workload(2))
    sink = lake.sink(cw.TABLE, Layer.FORENSIC)
    assert sink.mor is not None
    table = sink.mor.table
    kept = {table._id("a"), table._id("b"), table._id("c")}
    table._uncache("a")
    assert table._id("d") not in kept


def test_an_idle_table_is_left_without_deletion_vectors(lake_root, built):
    """delta-rs reads a table holding any DV on one core, so maintenance folds every DV of
    a table no writer committed to for `idle_after` seconds; a table being written, or
    quiet for less, keeps the thresholds (files past `max_deleted`); the rows stay the
    same either way."""
    lake = Lake(lake_root(), app_id="crash", write_modes=MOR, maintenance=True)
    assert lake.maintenance is not None
    lake.maintenance.interval = 10**6  # rounds only when the test runs them
    lake.maintenance.idle_after = 3600
    batches = cw.workload(8)
    live, forensic = uri(lake, "live"), uri(lake, "forensic")
    try:
        cw.run(lake, batches[:5])
        lake.maintenance.round()  # the first round knows no earlier version
        cw.run(lake, batches[:6])  # a writer commits between the rounds
        lake.maintenance.round()
        lake.maintenance.round()  # quiet since the last round, but not for an hour
        busy = dv_files_in_use(live), dv_files_in_use(forensic)
        assert busy[0] > 0 and busy[1] > 0, busy  # below the thresholds, DVs stay
        lake.maintenance.idle_after = 0
        lake.maintenance.round()  # quiet long enough: idle
        assert (dv_files_in_use(live), dv_files_in_use(forensic)) == (0, 0)
        cw.run(lake, batches)  # the writer finds its rows in the folded files
    finally:
        lake.close()
    expected = {k: logical(v) for k, v in tables(built["copy_on_write"]).items()}
    assert {k: logical(v) for k, v in tables(lake).items()} == expected
    for layer in ("live", "forensic"):
        answers = read_every_way(uri(lake, layer))
        assert all(logical(rows) == expected[layer] for rows in answers.values()), layer

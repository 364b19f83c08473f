"""The lake is the only source of truth for positions (DESIGN §3.3, guarantee 2).

Stories against a real Postgres and the real Debezium engine, the pipeline run in the test
process: what capture resumes from is reconciled with the lake on every start. Each step
ends with `verify` clean and the forensic versions of every key equal to those the source's
own history (an audit trigger, `truth_support.py`) says the lake must hold.

On the code before this suite: deleting the lake resumed from the kept offsets and lost most
rows; a lake restored from an older copy resumed from the slot and kept rows deleted
meanwhile; a dropped slot failed inside Debezium; a new lake path for the pipeline held
nothing of what was there before.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from tests.pipeline.truth_support import (
    Pipe,
    Versions,
    assert_versions,
    audited_table,
    changelog_ops,
    churn,
    drop_pipeline_slot,
    lake_versions,
    sql,
    unique_name,
    write_config,
)
from tidemark.kernel.positions import SourceRecord
from tidemark.resync import request_resync
from tidemark.stream_processors.embedded.arming import Plan, SourceTracker

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

TABLE = "public.items"
LAKE_TABLE = "src.public.items"


@pytest.fixture
def story(fresh_database, tmp_path: Path):
    url = fresh_database()
    audited_table(url, TABLE, 300)
    name = unique_name()
    config = write_config(
        tmp_path / "p.yaml", url=url, lake=tmp_path / "lake", tables=[TABLE], name=name
    )
    with Pipe(config, tmp_path / "state") as pipe:
        yield url, pipe, tmp_path
    drop_pipeline_slot(url, name)


def _check(pipe: Pipe, model: Versions, lake: Path) -> None:
    pipe.verify()
    assert_versions(model, str(lake), TABLE, LAKE_TABLE)


def test_lake_deleted_restored_moved_state_lost_or_restored_and_slot_dropped(story) -> None:
    url, pipe, tmp = story
    lake = tmp / "lake"
    model = Versions()

    # load 1: the first run snapshots, then streams
    assert pipe.start().fresh
    pipe.wait()
    model.resnapshot(url, TABLE)
    churn(url, TABLE, seed=1)
    pipe.wait()
    pipe.stop()
    model.stream(url)
    _check(pipe, model, lake)

    # the lake deleted while the offsets stay: the next start snapshots everything again
    shutil.rmtree(lake)
    churn(url, TABLE, seed=2)
    start = pipe.start()
    assert start.fresh and "holds nothing" in start.reasons[0], start.reasons
    pipe.wait()
    model.forget(TABLE)
    model.resnapshot(url, TABLE)
    churn(url, TABLE, seed=3)
    pipe.wait()
    pipe.stop()
    model.stream(url)
    _check(pipe, model, lake)

    # a lake restored from an older copy: rows deleted and changed since are reconciled
    older = tmp / "older"
    shutil.copytree(lake, older)
    model_older = _copy(model)
    pipe.start()
    churn(url, TABLE, seed=4)
    pipe.wait()
    pipe.stop()
    churn(url, TABLE, seed=5)
    shutil.rmtree(lake)
    shutil.move(older, lake)
    start = pipe.start()
    assert start.fresh and "older copy" in start.reasons[0], start.reasons
    pipe.wait()
    pipe.stop()
    model = model_older
    model.resnapshot(url, TABLE)
    _check(pipe, model, lake)
    assert changelog_ops(str(lake), LAKE_TABLE).get("d", 0) > 0  # vanished rows were closed

    # the state directory deleted while the lake stays: resume from the lake, no snapshot
    shutil.rmtree(pipe.state)
    churn(url, TABLE, seed=6)
    reads = changelog_ops(str(lake), LAKE_TABLE).get("r", 0)
    start = pipe.start()
    assert not start.fresh and not start.resnapshot and not start.reasons, start.reasons
    pipe.wait()
    pipe.stop()
    model.stream(url)
    _check(pipe, model, lake)
    assert changelog_ops(str(lake), LAKE_TABLE).get("r", 0) == reads

    # the state directory restored from an older copy (its offsets behind the lake): the
    # lake's offsets win; nothing is replayed into the lake, nothing snapshotted
    older_state = tmp / "older-state"
    shutil.copytree(pipe.state, older_state)
    pipe.start()
    churn(url, TABLE, seed=9)
    pipe.wait()
    pipe.stop()
    model.stream(url)
    shutil.rmtree(pipe.state)
    shutil.move(older_state, pipe.state)
    ops = changelog_ops(str(lake), LAKE_TABLE)
    start = pipe.start()
    assert not start.fresh and not start.resnapshot and not start.reasons, start.reasons
    pipe.wait()
    pipe.stop()
    _check(pipe, model, lake)
    assert changelog_ops(str(lake), LAKE_TABLE) == ops

    # the slot dropped while the offsets are kept: every table again, reconciled
    drop_pipeline_slot(url, pipe.config.pipeline)
    churn(url, TABLE, seed=7)
    start = pipe.start()
    assert start.fresh and "is gone" in start.reasons[0], start.reasons
    pipe.wait()
    pipe.stop()
    model.resnapshot(url, TABLE)
    _check(pipe, model, lake)

    # a new lake path for the same pipeline (offsets and slot kept): it gets everything
    moved = tmp / "lake-b"
    config = pipe.config
    write_config(pipe.config_path, url=url, lake=moved, tables=[TABLE], name=config.pipeline)
    start = pipe.start()
    assert start.fresh and "holds nothing" in start.reasons[0], start.reasons
    pipe.wait()
    fresh = Versions()
    fresh.resnapshot(url, TABLE)
    churn(url, TABLE, seed=8)
    pipe.wait()
    pipe.stop()
    fresh.stream(url)
    _check(pipe, fresh, moved)


def _copy(model: Versions) -> Versions:
    return Versions({k: list(v) for k, v in model.versions.items()}, dict(model.open), model.seen)


# A table added to the config is loaded alone in the default run
# (tests/loading/test_restart.py); the default run stays under 15 min.
@pytest.mark.slow
def test_a_table_left_out_of_the_config_and_back_is_snapshotted_again(fresh_database, tmp_path):
    """Changes made while a table was not captured cannot be streamed: back in the config,
    it is snapshotted again (alone, the other table streams), reconciled with the lake."""
    url = fresh_database()
    audited_table(url, TABLE, 200)
    audited_table(url, "public.other", 50)
    name = unique_name()
    both = [TABLE, "public.other"]
    config = write_config(
        tmp_path / "p.yaml", url=url, lake=tmp_path / "lake", tables=both, name=name
    )
    model = Versions()
    try:
        with Pipe(config, tmp_path / "state") as pipe:
            pipe.start()
            pipe.wait()
            pipe.stop()
            model.resnapshot(url, TABLE)
            write_config(
                config, url=url, lake=tmp_path / "lake", tables=["public.other"], name=name
            )
            pipe.start()
            pipe.wait()
            churn(url, TABLE, seed=1)  # not captured
            pipe.wait()
            pipe.stop()
            write_config(config, url=url, lake=tmp_path / "lake", tables=both, name=name)
            start = pipe.start()
            assert not start.fresh and start.resnapshot == [TABLE], start.reasons
            pipe.wait()
            model.resnapshot(url, TABLE)
            churn(url, TABLE, seed=2)
            pipe.wait()
            pipe.stop()
            model.stream(url)
            _check(pipe, model, tmp_path / "lake")

            # `tidemark resync` while no pipeline runs: the next start does it; a table the
            # lake holds as it is gets no event, no version
            (request,) = request_resync(pipe.config, state=pipe.state, tables=[TABLE])
            assert request.signal and request.running is None
            lake = tmp_path / "lake"
            ops = changelog_ops(str(lake), LAKE_TABLE)
            pipe.start()
            pipe.wait()
            pipe.stop()
            record = pipe.record()
            assert record is not None and record.armed[LAKE_TABLE] == request.signal
            assert changelog_ops(str(lake), LAKE_TABLE) == ops
            _check(pipe, model, lake)
    finally:
        drop_pipeline_slot(url, name)


def test_a_new_cluster_behind_the_pipeline_is_refused_then_adopted(fresh_database, tmp_path):
    """Another cluster behind the same pipeline name (its LSNs start over): `run` refuses it
    naming the tables and the fix; `tidemark resync` adopts it as a new position epoch and
    the next start snapshots it into the lake, reconciled (history kept)."""
    from tidemark.connectors.postgres.cluster import LocalCluster
    from tidemark.resync import request_resync
    from tidemark.startup import SourceReplacedError

    url = fresh_database()
    audited_table(url, TABLE, 200)
    # transaction ids above any the new cluster will have used: verify must still count the
    # old database's changes as before its snapshot (they are of an earlier epoch)
    sql(
        url,
        "DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
    )
    name = unique_name()
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "p.yaml", url=url, lake=lake, tables=[TABLE], name=name)
    model = Versions()
    other = LocalCluster(tmp_path / "cluster-b")
    (tmp_path / "cluster-b").parent.chmod(0o755)
    try:
        with Pipe(config, tmp_path / "state") as pipe:
            pipe.start()
            pipe.wait()
            model.resnapshot(url, TABLE)
            churn(url, TABLE, seed=1)
            pipe.wait()
            pipe.stop()
            model.stream(url)

            replaced = other.start()
            audited_table(replaced, TABLE, 120)
            churn(replaced, TABLE, seed=2)
            write_config(config, url=replaced, lake=lake, tables=[TABLE], name=name)
            with pytest.raises(SourceReplacedError) as refused:
                pipe.start()
            assert LAKE_TABLE in refused.value.message
            assert "tidemark resync" in (refused.value.hint or "")
            assert refused.value.exit_code == 2

            (request,) = request_resync(pipe.config, state=pipe.state)
            assert request.adopted
            start = pipe.start()
            assert start.fresh and start.record.epoch == 1, start.reasons
            pipe.wait()
            model.resnapshot(replaced, TABLE)
            churn(replaced, TABLE, seed=3)
            pipe.wait()
            pipe.stop()
            model.stream(replaced)
            _check(pipe, model, lake)
            # rows the new database brought carry positions of epoch 1, above all before
            live = DeltaTable(str(lake / "live" / LAKE_TABLE)).to_pyarrow_table().to_pylist()
            assert all(r["_tm_position"].startswith("01") for r in live if r["id"] >= 20_000)
    finally:
        drop_pipeline_slot(url, name)
        other.stop(mode="immediate")


class _Killed(BaseException):
    """Stands for a kill -9 right after a commit (raised on the loop thread)."""


def test_a_run_killed_while_the_lake_records_a_snapshot_under_way_snapshots_again(
    fresh_database, tmp_path, monkeypatch
) -> None:
    """Killed right after the first commit that records the initial snapshot under way: the
    lake's record then holds the offsets of Debezium's `STARTED` notice, which carry no
    snapshot marker (`{}`). The restart must redo the snapshot on a new slot, never stream
    on as if it had completed (it did, and every row not yet read was lost)."""
    url = fresh_database()
    audited_table(url, TABLE, 3_000)
    name = unique_name()
    config = write_config(
        tmp_path / "p.yaml", url=url, lake=tmp_path / "lake", tables=[TABLE], name=name
    )
    document = yaml.safe_load(config.read_text())
    document["batching"] = {"max_events": 50, "max_latency_ms": 100}  # a slow snapshot
    document["snapshot"] = {"*": {"loader": "debezium"}}  # Debezium's initial snapshot
    config.write_text(yaml.safe_dump(document))
    adopt = SourceTracker.adopt
    killed: list[SourceRecord] = []

    def adopt_then_die(self: SourceTracker, plan: Plan) -> None:
        adopt(self, plan)
        if not killed and any(a.kind == "initial" for a in plan.record.arming.values()):
            killed.append(plan.record)
            raise _Killed

    monkeypatch.setattr(SourceTracker, "adopt", adopt_then_die)
    try:
        with Pipe(config, tmp_path / "state") as pipe:
            assert pipe.start().fresh
            deadline = time.monotonic() + 120
            while pipe._thread is not None and pipe._thread.is_alive():
                assert time.monotonic() < deadline, "the run was not killed"
                time.sleep(0.1)
            assert killed and [type(e) for e in pipe._error] == [_Killed], pipe._error
            pipe._error.clear()
            pipe._thread = None
            record = pipe.record()
            assert record is not None and record.arming[LAKE_TABLE].kind == "initial"
            first = lake_versions(str(tmp_path / "lake"), LAKE_TABLE)
            churn(url, TABLE, seed=1, size=3_000)
            start = pipe.start()
            assert start.fresh and "did not complete" in start.reasons[-1], start.reasons
            pipe.wait()
            pipe.stop()
        pipe.verify()
        model = Versions({(TABLE, k): [v[0][0]] for k, v in first.items()})
        model.open = {k: v[-1] for k, v in model.versions.items()}
        model.resnapshot(url, TABLE)
        assert_versions(model, str(tmp_path / "lake"), TABLE, LAKE_TABLE)
        assert changelog_ops(str(tmp_path / "lake"), LAKE_TABLE).get("r") == sum(
            len(v) for v in model.versions.values()
        )
    finally:
        drop_pipeline_slot(url, name)

"""The lake's consistent-cut watermark as the batch log keeps it (sinks/watermark.py).

Real Delta tables: batches are recorded through `Lake.commit_batch` as the runner records
them (parts of a split transaction with `consistent=False`); the watermark read from the
Delta log (commit metadata) must equal the one folded from the rows, survive a new writer
process, a lake written before the watermark existed, and maintenance commits.
"""

from __future__ import annotations

from datetime import UTC, datetime

from deltalake import DeltaTable

from tidemark.sinks.lake import Lake
from tidemark.sinks.watermark import read_watermark, table_watermark, watermark_of


def _record(lake: Lake, batch_id: int, positions: dict, **kwargs) -> None:
    lake.commit_batch(
        batch_id, [], source_positions=positions, started_at=datetime.now(UTC), **kwargs
    )


def _from_rows(root) -> object:
    uri = str(root / "_tidemark" / "batches")
    return watermark_of(DeltaTable(uri).to_pyarrow_table())


def test_the_watermark_stays_behind_a_split_transaction_until_its_last_part(tmp_path) -> None:
    lake = Lake(str(tmp_path), app_id="p")
    _record(lake, 1, {"a": "01", "b": "01"}, consistent=True)
    assert lake.watermark().batch_id == 1
    _record(lake, 2, {}, split={"a": "tx7"}, consistent=False)  # a part of tx7
    _record(lake, 3, {"b": "05"}, split={"a": "tx7"}, consistent=False)  # b goes on meanwhile
    during = lake.watermark()
    assert (during.batch_id, during.latest_batch) == (1, 3)
    assert during.positions == {"a": "01", "b": "01"}  # b's 05 waits for a consistent batch
    assert during.open == {"a": "tx7"}
    assert read_watermark(str(tmp_path)) == during == _from_rows(tmp_path)
    _record(lake, 4, {"a": "09"}, split={"a": "tx7"}, consistent=True)  # the last part
    after = lake.watermark()
    assert (after.batch_id, after.latest_batch, after.open) == (4, 4, {})
    assert after.positions == {"a": "09", "b": "05"}
    assert read_watermark(str(tmp_path)) == after == _from_rows(tmp_path)
    lake.close()

    again = Lake(str(tmp_path), app_id="p")  # a new process continues from the stamp
    _record(again, 5, {}, split={"b": "tx9"}, consistent=False)
    assert again.watermark().batch_id == 4 and again.watermark().open == {"b": "tx9"}
    assert read_watermark(str(tmp_path)) == _from_rows(tmp_path)
    again.close()


def test_maintenance_commits_do_not_hide_the_watermark(tmp_path) -> None:
    lake = Lake(str(tmp_path), app_id="p")
    for batch in range(1, 6):
        _record(lake, batch, {"a": f"{batch:02d}"}, consistent=batch != 5, split={"a": "t"})
    DeltaTable(str(tmp_path / "_tidemark" / "batches")).optimize.compact()
    found = read_watermark(str(tmp_path))
    assert found is not None and (found.batch_id, found.latest_batch) == (4, 5)
    assert found == _from_rows(tmp_path)
    lake.close()


def test_a_lake_from_before_the_watermark_and_a_writer_that_keeps_none(tmp_path) -> None:
    lake = Lake(str(tmp_path), app_id="p")
    _record(lake, 1, {"a": "03"})  # no `consistent`: the distributed runtime, or older rows
    _record(lake, 2, {"a": "04"})
    assert lake.watermark() is None and read_watermark(str(tmp_path)) is None
    lake.close()
    upgraded = Lake(str(tmp_path), app_id="p")
    _record(upgraded, 3, {}, split={"a": "big"}, consistent=False)
    cut = read_watermark(str(tmp_path))
    assert cut is not None and cut.batch_id == 2 and cut.positions == {"a": "04"}
    assert cut == _from_rows(tmp_path)
    upgraded.close()
    assert read_watermark(str(tmp_path / "nowhere")) is None


def test_table_watermark_reads_the_log_not_the_rows(tmp_path) -> None:
    """Stamped commits answer from the Delta log: the figures stay once data files are gone
    (what `tidemark status` promises: it never reads table data)."""
    lake = Lake(str(tmp_path), app_id="p")
    _record(lake, 1, {"a": "01"}, consistent=True)
    _record(lake, 2, {}, split={"a": "t"}, consistent=False)
    before = read_watermark(str(tmp_path))
    lake.close()
    for data in (tmp_path / "_tidemark" / "batches").glob("*.parquet"):
        data.unlink()
    dt = DeltaTable(str(tmp_path / "_tidemark" / "batches"))
    assert table_watermark(dt) == before

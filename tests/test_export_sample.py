"""`tidemark export --sample N --out DIR`: N rows per table and layer, as JSON a person reads.

A real lake (three Delta layers written by the lake's writer from the loader's own event
builder) holds decimals, instants, binary and lists; the command writes
`DIR/<layer>/<table>.json` with at most N rows each, decimals as their exact digits,
timestamps ISO 8601, binary as hex.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
from click.testing import CliRunner

from tidemark.cli import cli
from tidemark.connectors.postgres.exported import SnapshotPoint
from tidemark.sinks.lake import Lake
from tidemark.stream_processors.loading.events import snapshot_events
from tidemark.stream_processors.milestoning.core import milestone

POINT = SnapshotPoint(0x1EB6F70, 0x1EB7000, 700, 710, (703,), "2026-01-01T00:00:00+00:00")


def test_export_writes_n_rows_per_table_and_layer_with_readable_values(tmp_path):
    rows = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "amount": pa.array([Decimal("12.50"), Decimal("-0.01"), None], pa.decimal128(10, 2)),
            "seen": pa.array(
                [datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), None, None],
                pa.timestamp("us", tz="UTC"),
            ),
            "blob": pa.array([b"\x00\xff", None, b"A"], pa.binary()),
            "tags": pa.array([["a"], [], None], pa.list_(pa.string())),
        }
    )
    changes = snapshot_events(
        "src.public.t",
        rows,
        key_columns=("id",),
        point=POINT,
        first_seq=0,
        source_ts=datetime(2026, 1, 1, tzinfo=UTC),
    )
    lake = Lake(str(tmp_path / "lake"), app_id="export")
    now = datetime.now(UTC)
    lake.commit_batch(
        1,
        [milestone(changes, None, batch_id=1, ingested_at=now)],
        source_positions={},
        started_at=now,
    )
    lake.close()

    def export(rows: int, out) -> None:
        lake_root = str(tmp_path / "lake")
        args = ["export", "--sample", str(rows), "--out", str(out), "--lake", lake_root]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output

    export(2, tmp_path / "two")
    for layer in ("changelog", "live", "forensic"):
        text = (tmp_path / "two" / layer / "src.public.t.json").read_text()
        assert text.startswith("[\n  {"), "indented"
        assert len(json.loads(text)) == 2, layer
    export(10, tmp_path / "all")
    live = json.loads((tmp_path / "all" / "live" / "src.public.t.json").read_text())
    by_id = {r["id"]: r for r in live}
    assert sorted(by_id) == [1, 2, 3]
    assert by_id[1]["amount"] == "12.50" and by_id[2]["amount"] == "-0.01"
    assert by_id[1]["seen"] == "2026-01-02T03:04:05.678901Z"
    assert by_id[1]["blob"] == "00ff" and by_id[3]["blob"] == "41"
    assert by_id[1]["tags"] == ["a"] and by_id[2]["tags"] == []

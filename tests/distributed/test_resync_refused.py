"""`tidemark resync` on a distributed pipeline says it cannot, before it touches anything.

Resync asks the embedded engine through its signal table and follows Debezium's
notifications; a Kafka Connect connector has neither, so a distributed config used to fail
with "has not run against source yet", which sent the user the wrong way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_resync_of_a_distributed_pipeline_is_a_usage_error_naming_why(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"pipeline: p\nlake: {tmp_path / 'lake'}\nsources:\n"
        "  - {name: shop, kind: postgres, dsn: 'postgresql://u:pw@127.0.0.1:1/db',"
        " tables: [public.a]}\n"
        "kafka: {bootstrap: '127.0.0.1:1'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tidemark", "resync", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: pipeline `p` is distributed"), error
    assert "Kafka Connect" in error
    assert hint.startswith("hint:") and "docs/distributed.md" in hint
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lake").exists()

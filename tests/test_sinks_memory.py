"""Tidemark's processes allocate Arrow memory through a pool that gives freed memory back
(sinks/memory.py).

Each case runs in a process of its own: the pool is chosen once per process, and RSS is only
meaningful in a process that did nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = """
import json, sys, time
{first}
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from tidemark.sinks.lake import Lake

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) // 1024 for l in status if l.startswith("VmRSS"))

Lake(sys.argv[1], app_id="memory")
ones = pa.repeat(pa.scalar(1, pa.int64()), 1_000_000)
pq.write_table(pa.table({"a": pc.cumulative_sum(ones)}), sys.argv[1] + ".parquet")
before = rss_mb()
batches = [pc.add(ones, i) for i in range(30)]  # 240 MB, as a writer's batches would be
files = [pq.read_table(sys.argv[1] + ".parquet") for _ in range(30)]  # 240 MB more
peak = rss_mb()
del batches, files
for _ in range(30):  # jemalloc gives pages back at once or within its decay time
    if rss_mb() - before < (peak - before) / 2:
        break
    time.sleep(0.1)
print(json.dumps({"pool": pa.default_memory_pool().backend_name, "before": before,
                  "peak": peak, "after": rss_mb()}))
"""


def _child(tmp_path: Path, first: str, **env: str) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD.replace("{first}", first), str(tmp_path / "lake")],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "first", ["import tidemark", "import pyarrow"], ids=["tidemark-first", "pyarrow-first"]
)
def test_freed_arrow_memory_goes_back(tmp_path: Path, first: str) -> None:
    """Whether Tidemark or pyarrow was imported first, the batches and file reads a writer
    frees leave the process."""
    got = _child(tmp_path, first)
    assert got["pool"] == "jemalloc"
    allocated = got["peak"] - got["before"]
    assert allocated > 400  # the buffers were really allocated (mimalloc keeps all of it)
    assert got["after"] - got["before"] < allocated / 2, got  # and their memory went back


def test_a_pool_the_user_chose_stays(tmp_path: Path) -> None:
    got = _child(tmp_path, "import tidemark", ARROW_DEFAULT_MEMORY_POOL="mimalloc")
    assert got["pool"] == "mimalloc"

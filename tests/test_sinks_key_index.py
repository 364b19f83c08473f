"""The merge-on-read key index (`sinks/delta/dv/index.py`) against a plain model: after rows
deleted and files dropped, enough to filter the index, every key is found exactly where it
still lives, and quickly (filtering used to rebuild its lookup set once per file)."""

from __future__ import annotations

import time

import pyarrow as pa
from pyroaring import BitMap64

from tidemark.sinks.delta.dv.index import KeyIndex

SCHEMA = pa.schema([("id", pa.int64())])
FILES, ROWS = 120, 200


def test_deleted_rows_and_dropped_files_leave_exactly_the_live_entries():
    index = KeyIndex(["id"], SCHEMA)
    model: dict[int, tuple[str, int]] = {}
    for f in range(FILES):
        keys = range(f * ROWS, (f + 1) * ROWS)
        index.add_file(f"f{f}", pa.table({"id": pa.array(keys, pa.int64())}))
        model.update({k: (f"f{f}", r) for r, k in enumerate(keys)})
    for f in range(0, FILES, 3):  # every third row of every third file deleted
        rows = BitMap64(range(0, ROWS, 3))
        index.delete(f"f{f}", rows)
        for r in rows:
            model.pop(f * ROWS + r)
    started = time.perf_counter()
    for f in range(1, FILES, 2):  # half the files dropped: the index is filtered
        index.drop_file(f"f{f}")
        for k in range(f * ROWS, (f + 1) * ROWS):
            model.pop(k, None)
    assert time.perf_counter() - started < 5  # was minutes at a million entries

    assert len(index) == len(model)
    found = index.locate(pa.table({"id": pa.array(range(FILES * ROWS), pa.int64())}))
    got = {
        k: (p, r)
        for k, p, r in zip(
            found.column("id").to_pylist(),
            found.column("path").to_pylist(),
            found.column("row").to_pylist(),
            strict=True,
        )
    }
    assert got == model

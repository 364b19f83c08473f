"""Arrow's memory pool for Tidemark's processes: one that gives freed memory back.

A writer allocates and frees Arrow buffers batch after batch: batches, lookups, files being
written, the key index. pyarrow's default pool on Linux, mimalloc, keeps much of what was
freed: in `bench/e2e.py` (10M rows, uniform keys, merge-on-read) the process peaked at 1.62
to 1.65 GB of RSS while Arrow itself never held more than 506 MB. jemalloc, which pyarrow
ships too, gives freed pages back: the same run peaked at 1.36 GB (docs/sinks.md has the
side-by-side runs).

Arrow reads its choice of pool once, when pyarrow is imported, so `tidemark/__init__.py` asks
for jemalloc before anything imports pyarrow. Where pyarrow came first (Tidemark embedded in
a program that imported it), the lake switches pyarrow's default pool when it is built:
buffers remember the pool that allocated them, so that is safe, but Arrow's internal
allocations stay in mimalloc. A user who chose a pool (`ARROW_DEFAULT_MEMORY_POOL`) keeps it.
"""

from __future__ import annotations

import os
import platform
import sys

CHOSEN = "ARROW_DEFAULT_MEMORY_POOL"
RETURNING = "jemalloc"


def prefer_returning_pool() -> None:
    """Ask Arrow for jemalloc, if pyarrow is not imported yet (Linux x86-64, where pyarrow's
    wheels are known to ship it; elsewhere `use_returning_pool` finds out)."""
    if "pyarrow" in sys.modules or sys.platform != "linux" or platform.machine() != "x86_64":
        return
    os.environ.setdefault(CHOSEN, RETURNING)


def use_returning_pool() -> None:
    """Make jemalloc pyarrow's default pool, unless the user chose one or pyarrow was built
    without it (imported here: this module must not import pyarrow before
    `prefer_returning_pool` ran)."""
    import pyarrow as pa

    if os.environ.get(CHOSEN):
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc (some platforms)
        return
    if pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)

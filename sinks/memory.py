"""Arrow's memory pool for the lake's writers: one that gives freed memory back.

A writer allocates and frees Arrow buffers batch after batch: batches, lookups, files being
written, the key index. pyarrow's default pool on Linux, mimalloc, keeps much of what was
freed: in `bench/e2e.py` (10M rows, uniform keys, merge-on-read) the process peaked at 1.62
to 1.65 GB of RSS while Arrow itself never held more than 506 MB. jemalloc, which pyarrow
ships too and configures to give freed pages back at once, peaked at 1.36 GB in the same run
(docs/sinks.md has the side-by-side runs).

Buffers remember the pool that allocated them, so switching the default while some are
alive is safe. A user who chose a pool (`ARROW_DEFAULT_MEMORY_POOL`) keeps it.
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa

log = logging.getLogger(__name__)

CHOSEN_BY_USER = "ARROW_DEFAULT_MEMORY_POOL"


def use_returning_pool() -> str:
    """Make jemalloc Arrow's default pool unless the user chose one or pyarrow was built
    without it; returns the pool's name."""
    if os.environ.get(CHOSEN_BY_USER):
        return pa.default_memory_pool().backend_name
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc (some platforms)
        return pa.default_memory_pool().backend_name
    if pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)
        log.debug("Arrow allocates through jemalloc (gives freed memory back)")
    return pool.backend_name

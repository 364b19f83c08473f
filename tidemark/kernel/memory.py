"""Which allocator Arrow's buffers come from in Tidemark's processes.

pyarrow's default pool is mimalloc. In Tidemark's long-running processes it kept freed
memory: draining 300,000 updates spread over a 10M-row merge-on-read table peaked at
1.45-1.66 GB RSS with mimalloc and 1.27-1.29 GB with the system allocator (glibc malloc),
at the same speed or better (`bench/e2e.py --sizes 10000000 --keys uniform`, 2026-12-07;
jemalloc: 1.30 GB). The loader's CPU did not change measurably.
"""

from __future__ import annotations

import os

import pyarrow as pa

POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
"""Arrow's own setting: whoever sets it chooses the pool, and Tidemark leaves it."""


def use_system_allocator() -> None:
    """Make the system allocator Arrow's default pool, unless `ARROW_DEFAULT_MEMORY_POOL`
    names one. Buffers already allocated stay with their pool."""
    if not os.environ.get(POOL_ENV):
        pa.set_memory_pool(pa.system_memory_pool())

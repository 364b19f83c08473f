"""Tidemark's processes allocate Arrow buffers from the system allocator
(`tidemark/kernel/memory.py`), unless the user chose a pool."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from tidemark.kernel.memory import POOL_ENV, use_system_allocator


@pytest.fixture
def pool_restored():
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


def test_the_system_allocator_unless_one_was_chosen(pool_restored, monkeypatch):
    monkeypatch.delenv(POOL_ENV, raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    use_system_allocator()
    assert pa.default_memory_pool().backend_name == "system"

    monkeypatch.setenv(POOL_ENV, "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    use_system_allocator()
    assert pa.default_memory_pool().backend_name == "mimalloc"


def test_the_command_line_switches_before_any_command():
    code = (
        "import pyarrow as pa, tidemark.cli as c; c.exit_now = lambda code: None; "
        "c.main(['--help']); print(pa.default_memory_pool().backend_name)"
    )
    env = {k: v for k, v in os.environ.items() if k != POOL_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "system"

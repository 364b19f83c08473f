"""The import arrows of DESIGN §2, checked on the source: they run one way.

`tidemark/` (CLI, wiring) -> runtimes in `stream_processors/` -> `connectors/`, `sinks/` ->
the kernel (`tidemark/kernel/`), which imports nothing else of ours. Every installed import
name lives under `tidemark.` (the folders install as `tidemark.connectors`, ...), so no module
may import a top-level `connectors`, `sinks`, `stream_processors` or `simulator`; and the
benchmarks never import the tests.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("connectors", "sinks", "stream_processors", "simulator")
SCANNED = (*FOLDERS, "tidemark", "tests", "bench")


def _modules(folder: str) -> Iterator[Path]:
    yield from sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _ours(path: Path) -> set[str]:
    """`tidemark.<part>` for each of our modules `path` imports (part: kernel, sinks, ...)."""
    return {
        name.split(".")[1]
        for name in _imports(path)
        if name.startswith("tidemark.") and name.count(".") >= 1
    }


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("folder", SCANNED)
def test_no_module_imports_a_folder_by_its_top_level_name(folder):
    bad = [
        f"{_rel(p)}: {name}"
        for p in _modules(folder)
        for name in _imports(p)
        if name.split(".")[0] in FOLDERS
    ]
    assert not bad, "import these as tidemark.<folder>...: " + "; ".join(bad)


def test_the_kernel_imports_nothing_else_of_ours():
    bad = [
        f"{_rel(p)}: {sorted(_ours(p) - {'kernel'})}"
        for p in _modules("tidemark/kernel")
        if _ours(p) - {"kernel"}
    ]
    assert not bad, bad


@pytest.mark.parametrize("folder", ["connectors", "sinks"])
def test_connectors_and_sinks_import_only_themselves_and_the_kernel(folder):
    bad = [
        f"{_rel(p)}: {sorted(_ours(p) - {folder, 'kernel'})}"
        for p in _modules(folder)
        if _ours(p) - {folder, "kernel"}
    ]
    assert not bad, bad


def test_the_milestoning_core_is_pure():
    """The core imports the kernel and itself only (no sinks, no connectors, no I/O)."""
    core = ROOT / "stream_processors" / "milestoning"
    io = {"deltalake", "duckdb", "psycopg2", "confluent_kafka", "faust", "os", "socket"}
    bad = []
    for path in sorted(core.rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in io or (
                name.startswith("tidemark.")
                and not name.startswith(
                    ("tidemark.kernel", "tidemark.stream_processors.milestoning")
                )
            ):
                bad.append(f"{_rel(path)}: {name}")
    assert not bad, bad


def test_runtimes_do_not_import_the_wiring():
    bad = [
        f"{_rel(p)}: {sorted(_ours(p) - {*FOLDERS, 'kernel'})}"
        for p in _modules("stream_processors")
        if _ours(p) - {*FOLDERS, "kernel"}
    ]
    assert not bad, bad


def test_the_benchmarks_do_not_import_the_tests():
    bad = [
        f"{_rel(p)}: {name}"
        for p in _modules("bench")
        for name in _imports(p)
        if name.split(".")[0] == "tests"
    ]
    assert not bad, bad

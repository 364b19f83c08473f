"""The distributed runtime on real Kafka Connect: Postgres -> Connect (Debezium) -> Tansu ->
`tidemark worker` x1 and x2 -> Delta, against Connect's own produce rate, plus recovery times.

Throughput, on a backlog: the connector is registered on a table of one row (its snapshot
creates the topic), stopped, the churn is written (70% inserts, 25% updates, 5% deletes,
transactions of 100), the workers start and take every partition, then the connector is
resumed and the clock starts. Connect's produce rate is the churn's size over the time
until the topic holds every record; end to end is over the time until the workers have
committed every event. Arms, each on a fresh database, connector, topic and lake: Connect
alone (the ceiling), 1 worker, 2 workers (the workers' runs measure Connect's rate too).

Recovery, under a steady writer: one worker killed (-9) and started again (time from the
restart to its first commit), and two workers with one killed (time from the kill to the
survivor's first commit with every partition), for each session timeout and with and without
static membership (`--instance-id`). Peak RSS of every worker (VmHWM).

    .venv/bin/python bench/distributed.py --connect [--events 100000]

Prints figures and writes bench/results/distributed_connect.json. Never asserts timings.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "distributed_connect.json"


def _create_db(admin_dsn: str, cluster: Any) -> str:
    name = f"b_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    dsn: str = cluster.url(name)
    with psycopg2.connect(dsn) as c, c.cursor() as cur:
        cur.execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int, "
            "price numeric(12,2), note text)"
        )
    return dsn


def _stack(work: Path, tag: str, dsn: str, bootstrap: str, connect: Any, secrets: Path) -> Any:
    from tidemark.config import load_config
    from tidemark.stack.cluster import DistributedStack

    folder = work / tag
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": f"b{tag.replace('-', '_')}",
                "lake": str(folder / "lake"),
                "sources": [
                    {
                        "name": f"s{uuid.uuid4().hex[:6]}",
                        "kind": "postgres",
                        "dsn": dsn,
                        "tables": ["public.items"],
                    }
                ],
                "batching": {"max_events": 20_000, "max_latency_ms": 500},
                "kafka": {"bootstrap": bootstrap},
            }
        )
    )
    return DistributedStack(
        load_config(path),
        path,
        folder / "stack",
        external_broker=True,
        connect=connect,
        secrets_file=secrets,
    )


def _topic_records(bootstrap: str, topic: str) -> int:
    """Records in a topic now (end offsets, checked by reading each partition's last batch:
    Tansu's watermark counts batches)."""
    from confluent_kafka import Consumer, TopicPartition

    from tidemark.connectors.kafka.offsets import end_offsets

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        meta = consumer.list_topics(timeout=5).topics
        if topic not in meta:
            return 0
        parts = [TopicPartition(topic, p) for p in meta[topic].partitions]
        return sum(end_offsets(consumer, parts, 3.0).values())
    finally:
        consumer.close()


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def throughput_arm(
    *,
    work: Path,
    workers: int,
    events: int,
    admin_dsn: str,
    cluster: Any,
    bootstrap: str,
    connect: Any,
    secrets: Path,
) -> dict[str, Any]:
    """One arm on a backlog (see the module doc)."""
    from bench.distributed import churn

    dsn = _create_db(admin_dsn, cluster)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:  # the snapshot creates the topic
        cur.execute("INSERT INTO items VALUES (0, 'seed', 0, 0, NULL)")
    stack = _stack(work, f"tp{workers}", dsn, bootstrap, connect, secrets)
    stack.register()
    stack.wait_running()
    deadline = time.monotonic() + 120
    while not stack.snapshot_done() and time.monotonic() < deadline:
        time.sleep(0.5)
    name = stack.connector_names()[0]
    client = stack.client()
    client.stop(name)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # stopping is asynchronous: the task must be gone
        state = client.status(name)
        if state is not None and state.state == "STOPPED" and not state.tasks:
            break
        time.sleep(0.5)
    written = churn(dsn, events)
    topic = f"{stack.config.sources[0].name}.public.items"
    for index in range(workers):
        stack.start_worker(f"w{index + 1}")
    # the clock starts once the workers hold every partition and applied the snapshot row:
    # what is measured is the stream, not the group join
    deadline = time.monotonic() + 180
    while workers and time.monotonic() < deadline:
        stats = stack.worker_stats().values()
        held = sum(len(s.get("assigned", [])) for s in stats)
        if held >= stack.partitions and sum(s.get("events", 0) for s in stats) >= 1:
            break
        time.sleep(0.5)
    started = time.time()
    client.resume(name)
    first = connect_done = lake_done = None
    rss: dict[str, float | None] = {}
    limit = time.monotonic() + 1800
    while time.monotonic() < limit:
        now = time.time()
        produced = _topic_records(bootstrap, topic) - 1 if connect_done is None else written
        if first is None and produced > 0:
            first = now
        if connect_done is None and produced >= written:
            connect_done = now
        stats = stack.worker_stats()
        if workers and sum(s.get("events", 0) for s in stats.values()) >= written + 1:
            lake_done = max(s.get("last_commit") or now for s in stats.values())
        if connect_done is not None and (lake_done is not None or not workers):
            break
        time.sleep(0.5)
    for wname, worker in stack.workers.items():
        rss[wname] = _peak_rss_mb(worker.process.pid)
    stack.stop()
    stack.remove(dsn=dsn)
    # Rates count from Connect's first record in the topic: before it, the resumed task
    # starts (a rebalance of the Connect group and the slot's reconnection), the same for
    # every arm; `*_from_resume_*` keep that start in.
    out: dict[str, Any] = {"workers": workers, "events": written}
    if first is not None:
        out["task_start_seconds"] = round(first - started, 2)
    if connect_done is not None and first is not None:
        out["connect_seconds"] = round(connect_done - first, 2)
        out["connect_events_per_s"] = round(written / max(connect_done - first, 0.5))
        out["connect_from_resume_events_per_s"] = round(written / (connect_done - started))
    if lake_done is not None and first is not None:
        out["end_to_end_seconds"] = round(lake_done - first, 2)
        out["end_to_end_events_per_s"] = round(written / max(lake_done - first, 0.5))
        out["end_to_end_from_resume_events_per_s"] = round(written / (lake_done - started))
        out["worker_peak_rss_mb"] = rss
    return out


class SteadyWriter:
    """Transactions of 10 changes at about `rate` changes/s until stopped."""

    def __init__(self, dsn: str, rate: float) -> None:
        self.dsn, self.rate = dsn, rate
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        offset = 10_000_000
        while not self.stop.is_set():
            began = time.monotonic()
            with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
                ids = list(range(offset, offset + 10))
                offset += 10
                cur.executemany(
                    "INSERT INTO items VALUES (%s, 'x', 1, 1.5, NULL)", [(i,) for i in ids]
                )
            time.sleep(max(0.0, 10 / self.rate - (time.monotonic() - began)))

    def __enter__(self) -> SteadyWriter:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _first_commit_after(worker: Any, since: float, timeout: float = 180) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = worker.read_stats()
        last = stats.get("last_commit")
        if last and last > since:
            return float(last)
        time.sleep(0.2)
    return None


def recovery_arm(
    *,
    work: Path,
    session: float,
    static: bool,
    admin_dsn: str,
    cluster: Any,
    bootstrap: str,
    connect: Any,
    secrets: Path,
) -> dict[str, Any]:
    """Restart of a single worker, and takeover by a survivor (see the module doc)."""
    dsn = _create_db(admin_dsn, cluster)
    tag = f"rc{int(session)}{'s' if static else ''}"
    stack = _stack(work, tag, dsn, bootstrap, connect, secrets)
    stack.session_timeout_s = session
    stack.register()
    stack.wait_running()
    out: dict[str, Any] = {"session_timeout_s": session, "static_membership": static}
    try:
        with SteadyWriter(dsn, rate=500):
            _recover(stack, out, tag if static else None)
    finally:
        stack.stop()
    stack.remove(dsn=dsn)
    return out


def _start(stack: Any, name: str, tag: str | None) -> Any:
    """A worker, with a static membership id when `tag` is given."""
    stack.worker_args = ("--instance-id", f"{tag}-{name}") if tag else ()
    return stack.start_worker(name)


def _recover(stack: Any, out: dict[str, Any], tag: str | None) -> None:
    first = _start(stack, "w1", tag)
    if _first_commit_after(first, 0) is None:
        raise RuntimeError("the first worker never committed:\n" + first.tail())
    time.sleep(2)
    first.kill()
    restarted = time.time()
    again = _start(stack, "w1", tag)
    back = _first_commit_after(again, restarted)
    out["restart_to_first_commit_s"] = None if back is None else round(back - restarted, 2)
    second = _start(stack, "w2", tag)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (
        again.read_stats().get("assigned") and second.read_stats().get("assigned")
    ):
        time.sleep(0.2)
    time.sleep(3)
    again.kill()
    killed = time.time()
    takeover = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        stats = second.read_stats()
        if (
            len(stats.get("assigned", [])) >= stack.partitions
            and (stats.get("last_commit") or 0) > killed
        ):
            takeover = float(stats["last_commit"])
            break
        time.sleep(0.2)
    out["kill_to_survivor_commit_s"] = None if takeover is None else round(takeover - killed, 2)
    out["worker_peak_rss_mb"] = _peak_rss_mb(second.process.pid)


def run(args: Any) -> None:
    from tidemark.connectors.kafka.broker import TansuBroker
    from tidemark.connectors.kafka.connect import ConnectSettings, ConnectWorker
    from tidemark.connectors.postgres.cluster import LocalCluster

    work = Path(os.environ.get("BENCH_DIR", "/tmp/dist-bench-connect"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    broker = TansuBroker(work / "tansu.log")
    bootstrap = broker.start()
    cluster = LocalCluster(work / "pg")
    connect = ConnectWorker(work / "connect", ConnectSettings(bootstrap=bootstrap, group="bench"))
    result: dict[str, Any] = {
        "benchmark": "distributed_connect",
        "at": datetime.now(UTC).isoformat(),
        "command": "python bench/distributed.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_avg_1m_start": os.getloadavg()[0],
    }
    try:
        admin = cluster.start()
        began = time.monotonic()
        connect.start(timeout=300)
        result["connect_start_seconds"] = round(time.monotonic() - began, 1)
        secrets = work / "connect" / "secrets.properties"
        arms = []
        for workers in [0, *(int(n) for n in args.workers.split(","))]:
            arm = throughput_arm(
                work=work,
                workers=workers,
                events=args.events,
                admin_dsn=admin,
                cluster=cluster,
                bootstrap=bootstrap,
                connect=connect,
                secrets=secrets,
            )
            print(json.dumps(arm))
            arms.append(arm)
        result["throughput"] = arms
        ceiling = arms[0].get("connect_events_per_s")
        for arm in arms[1:]:
            if ceiling and arm.get("end_to_end_events_per_s"):
                arm["end_to_end_over_connect_alone"] = round(
                    arm["end_to_end_events_per_s"] / ceiling, 2
                )
            if arm.get("connect_events_per_s") and arm.get("end_to_end_events_per_s"):
                arm["end_to_end_over_connect_same_run"] = round(
                    arm["end_to_end_events_per_s"] / arm["connect_events_per_s"], 2
                )
        recovery = []
        if not args.no_recovery:
            for session in (float(s) for s in args.sessions.split(",")):
                for static in (False, True):
                    arm = recovery_arm(
                        work=work,
                        session=session,
                        static=static,
                        admin_dsn=admin,
                        cluster=cluster,
                        bootstrap=bootstrap,
                        connect=connect,
                        secrets=secrets,
                    )
                    print(json.dumps(arm))
                    recovery.append(arm)
        result["recovery"] = recovery
        result["load_avg_1m_end"] = os.getloadavg()[0]
        out = Path(args.out) if args.out else RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        connect.stop()
        cluster.stop(mode="immediate")
        broker.stop()

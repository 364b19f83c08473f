"""The distributed runtime's status: consumer lag per partition against the real (Tansu)
broker, from the offsets the lake's lanes recorded, and the connector's state.

Kafka Connect is not started by the tests (docs/distributed.md): its REST API is the small
stand-in of `tests/distributed/fake_connect.py`, which answers with Connect's recorded
response shapes.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
import yaml
from confluent_kafka import Producer

from tests.distributed.fake_connect import FakeConnect
from tests.fixtures.kafka import create_topics
from tests.observe.lake_story import TABLES, LakeStory, minutes_ago
from tidemark.config import load_config
from tidemark.kernel.columns import Layer
from tidemark.observe.report import Observer
from tidemark.sinks.delta.table import DeltaHandle, table_uri
from tidemark.stream_processors.distributed.commits import batch_id_of

NOWHERE = "postgresql://u:p@127.0.0.1:1/none"


def _record_lane(root: str, *, source: str, table: str, partition: int, next_offset: int) -> None:
    """What a worker's lane commit leaves: a txn (app id per lane and layer) whose version
    encodes the partition's next offset."""
    topic = f"{source}.{table}"
    for layer in Layer:
        uri = table_uri(root, layer.value, f"{source}.{table}")
        handle = DeltaHandle(
            uri, app_id=f"tidemark:obs:{topic}:{partition}:{source}.{table}:{layer.value}"
        )
        handle.open()
        assert handle.schema is not None
        handle.commit(
            pa.Table.from_pylist([], schema=handle.schema),
            batch_id=batch_id_of(next_offset, partition),
            position=None,
        )


def test_consumer_lag_per_partition_and_the_connector_state(kafka, tmp_path) -> None:
    source = f"s{uuid.uuid4().hex[:8]}"
    create_topics(kafka.bootstrap, [f"{source}.{t}" for t in TABLES], partitions=2)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for partition, count in ((0, 10), (1, 5)):
        for i in range(count):
            producer.produce(
                f"{source}.public.customers", value=b"{}", key=str(i), partition=partition
            )
    producer.flush(30)

    root = str(tmp_path / "lake")
    story = LakeStory(root)  # tables named shop.*: make them this source's
    story.close()
    lake = LakeStory(root)
    lake.drivers = {
        t: type(d)(lake.lake, f"{source}.{t}", d.schema) for t, d in story.drivers.items()
    }
    lake.batch("public.customers", range(1, 8), at=minutes_ago(1))
    lake.batch("public.accounts", range(1, 3), at=minutes_ago(1))
    lake.close()
    _record_lane(root, source=source, table="public.customers", partition=0, next_offset=7)

    config_path = tmp_path / "p.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "pipeline": "obs",
                "lake": root,
                "sources": [
                    {"name": source, "kind": "postgres", "dsn": NOWHERE, "tables": list(TABLES)}
                ],
                "kafka": {"bootstrap": kafka.bootstrap},
            }
        )
    )
    with FakeConnect() as connect:
        connect.state.connectors[f"obs-{source}"] = {"connector.class": "x"}
        connect.state.task_state[f"obs-{source}"] = (
            "FAILED",
            "ConnectException: slot busy\n\tat x",
        )
        report = Observer(load_config(config_path), connect_url=connect.url).report()
    found = report.sources[0]
    assert found.runtime == "distributed" and found.slot == f"tidemark_obs_{source}_connect"
    lags = {(p.topic, p.partition): (p.end_offset, p.lake_offset, p.lag) for p in found.partitions}
    assert lags[(f"{source}.public.customers", 0)] == (10, 7, 3)
    assert lags[(f"{source}.public.customers", 1)] == (5, 0, 5)
    assert lags[(f"{source}.public.accounts", 0)] == (0, 0, 0)
    customers = report.table(f"{source}.public.customers")
    assert customers.consumer_lag == 8
    # with records waiting, its freshness counts from its own newest change
    assert all(x.watermark == x.newest_change for x in customers.layers)
    assert report.table(f"{source}.public.accounts").consumer_lag == 0
    assert found.connector.state == "RUNNING" and found.connector.tasks == ["0: FAILED"]
    assert found.connector.error == "ConnectException: slot busy"


@pytest.mark.slow  # long; the default run stays under 15 min
def test_status_shows_connects_offset_the_partitions_and_the_workers_gates(
    kafka, connect_worker, fresh_database, tmp_path
) -> None:
    """`tidemark status --connect-url` on a real Kafka Connect: the connector's committed
    offset, every partition's offsets, and each worker's beacon with its transaction gate."""
    import os
    import subprocess
    import sys

    import psycopg2

    from tests.distributed.support import wait_for
    from tidemark.sinks.beacons import write_beacon
    from tidemark.stack.cluster import DistributedStack

    dsn = fresh_database()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        cur.execute("INSERT INTO customers SELECT g, 'n' || g FROM generate_series(1, 50) g")
    source = f"st{uuid.uuid4().hex[:6]}"
    config_path = tmp_path / "p.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "pipeline": f"obs{uuid.uuid4().hex[:4]}",
                "lake": str(tmp_path / "lake"),
                "sources": [
                    {"name": source, "kind": "postgres", "dsn": dsn, "tables": ["public.customers"]}
                ],
                "kafka": {"bootstrap": kafka.bootstrap},
            }
        )
    )
    config = load_config(config_path)
    stack = DistributedStack(
        config,
        config_path,
        tmp_path / "stack",
        external_broker=True,
        connect=connect_worker.worker,
        secrets_file=connect_worker.secrets_file,
    )
    stack.register()
    try:
        stack.wait_running()
        wait_for(stack.snapshot_done, timeout=120, what="the snapshot's offsets")
        gate = {
            "on": True,
            "follows": [f"{source}.transaction"],
            "markers": 3,
            "holding": {f"{source}.public.customers/2": 4.0},
        }
        write_beacon(
            config.lake,
            "host-1",
            {
                "group": "g",
                "partitions": [f"{source}.public.customers/0"],
                "events": 50,
                "batches": 1,
                "gate": gate,
            },
            {},
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidemark",
                "status",
                "--config",
                str(config_path),
                "--connect-url",
                connect_worker.url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "300"},
        )
        assert result.returncode == 0, result.stderr
        out = " ".join(result.stdout.split())
        assert f"connector {config.pipeline}-{source}: RUNNING" in out
        assert "connect offset 0/" in out
        assert f"{source}.public.customers: p0 0/" in out  # nothing applied: no worker ran
        assert (
            "worker host-1 (running): 1 partitions, 50 events; transaction gate follows 1 " in out
        )
        assert f"holding {source}.public.customers/2 4s" in out
        report = Observer(config, connect_url=connect_worker.url).report()
        assert report.sources[0].connector.offsets["lsn"]
        assert report.workers[0].gate.markers == 3 and report.workers[0].alive
    finally:
        stack.remove(dsn=dsn)

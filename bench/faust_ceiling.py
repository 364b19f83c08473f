"""The no-op ceiling of each way to get records out of Faust (issue #6).

Publishes N small records to a 4-partition topic on a Tansu broker, then consumes them with
a no-op agent, each mode in a fresh `python bench/faust_ceiling.py --child MODE` process:

  - `take_events`: Faust's stream, `stream.take_events(max, within)` (the old worker path);
  - `bulk`: `stream_processors.distributed.bulk.BulkConsumer`, whole fetches to the agent
    (the worker's path now);
  - `confluent`: a raw confluent-kafka consumer (no Faust), for reference.

    .venv/bin/python bench/faust_ceiling.py [--records 200000]

Prints records/s (first record to last) and writes bench/results/faust_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "faust_ceiling.json"
WORK = Path(os.environ.get("BENCH_DIR", "/tmp/dist-ceiling"))
MODES = ("take_events", "bulk", "confluent")


def child(mode: str, bootstrap: str, topic: str, total: int) -> None:
    """Consume `total` records with a no-op handler; print JSON {seconds}."""
    if mode == "confluent":
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"c-{time.time()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        got, first = 0, None
        while got < total:
            batch = consumer.consume(10_000, 1.0)
            if batch and first is None:
                first = time.perf_counter()
            got += sum(1 for m in batch if m.error() is None)
        print(json.dumps({"seconds": time.perf_counter() - first}), flush=True)
        consumer.close()
        return
    import faust

    app = faust.App(
        f"ceiling-{mode}-{time.time()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=str(WORK / f"faust-{mode}"),
        key_serializer="raw",
        value_serializer="raw",
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        stream_buffer_maxsize=40_000,
        broker_max_poll_records=10_000,
    )
    channel = app.topic(
        topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    state = {"got": 0, "first": None}

    def count(n: int) -> None:
        if state["first"] is None:
            state["first"] = time.perf_counter()
        state["got"] += n
        if state["got"] >= total:
            print(json.dumps({"seconds": time.perf_counter() - state["first"]}), flush=True)
            os._exit(0)

    if mode == "bulk":
        from tidemark.stream_processors.distributed.bulk import install, take

        inbox = install(app).inbox(topic)

        @app.agent(channel)
        async def bulk_agent(stream: object) -> None:
            while True:
                work = await take(inbox, max_events=20_000, within=0.5)
                count(sum(len(r) for r in work.values()))
    else:

        @app.agent(channel)
        async def take_agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(20_000, within=0.5):
                count(len(events))

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "BOOTSTRAP", "TOPIC", "TOTAL"))
    args = parser.parse_args()
    if args.child:
        mode, bootstrap, topic, total = args.child
        sys.argv = [sys.argv[0], "worker"]
        child(mode, bootstrap, topic, int(total))
        return
    from confluent_kafka import Producer

    from tidemark.connectors.kafka.broker import TansuBroker, create_topics

    WORK.mkdir(parents=True, exist_ok=True)
    broker = TansuBroker(WORK / "tansu.log")
    bootstrap = broker.start()
    results = {}
    try:
        topic = "ceiling.public.items"
        create_topics(bootstrap, [topic], partitions=4)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
        value = json.dumps({"payload": {"id": 1, "name": "x" * 400}}).encode()
        for i in range(args.records):
            producer.produce(topic, key=str(i).encode(), value=value)
            if i % 10_000 == 0:
                producer.poll(0)
        producer.flush(60)
        for mode in MODES:
            out = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__)),
                    "--child",
                    mode,
                    bootstrap,
                    topic,
                    str(args.records),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
            # Faust's worker logs what the child prints: look in both streams
            found = re.search(r'\{"seconds": [0-9.e-]+\}', out.stdout + out.stderr)
            if found is None:
                print(f"{mode}: failed\n{out.stderr[-2000:]}")
                continue
            seconds = json.loads(found.group())["seconds"]
            results[mode] = round(args.records / seconds)
            print(f"{mode}: {results[mode]:,} records/s (no-op handler)")
    finally:
        broker.stop()
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "faust_ceiling",
                "at": datetime.now(UTC).isoformat(),
                "command": f"python bench/faust_ceiling.py --records {args.records}",
                "records": args.records,
                "load_avg_1m": os.getloadavg()[0],
                "records_per_s": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

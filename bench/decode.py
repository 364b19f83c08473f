"""Decoder throughput: Debezium JSON envelopes -> typed Arrow batches, on one core.

Target (issue 3): >= 20,000 events/s. The input is a realistic mix of three tables
(customers, orders with decimals/timestamps/json/enums, events with uuid/arrays/bytea) in
Debezium's exact JSON shape (schemas.enable=true), with transaction markers and heartbeats,
decoded in engine-sized chunks. Side by side, the same records through two baselines:
`orjson.loads` of every value alone (the parse floor) and a naive decoder that parses the
whole envelope and builds rows with `pa.Table.from_pylist`.

    python bench/decode.py [--events 100000] [--chunk 2048]

Prints the figures and writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tidemark.connectors.decode import Decoder
from tidemark.kernel.records import RawRecord


def _f(kind: str, field: str, **extra: object) -> dict:
    return {"type": kind, "optional": True, "field": field, **extra}


DEC = "org.apache.kafka.connect.data.Decimal"
TABLES = {
    "customers": [
        {"type": "int64", "optional": False, "field": "id"},
        _f("string", "name"),
        _f("string", "email"),
        _f("string", "country"),
        _f("int64", "created_at", name="io.debezium.time.MicroTimestamp", version=1),
        _f("string", "updated_at", name="io.debezium.time.ZonedTimestamp", version=1),
        _f(
            "bytes",
            "balance",
            name=DEC,
            version=1,
            parameters={"scale": "2", "connect.decimal.precision": "12"},
        ),
        _f("boolean", "active"),
    ],
    "orders": [
        {"type": "int64", "optional": False, "field": "id"},
        _f("int64", "customer_id"),
        _f(
            "bytes",
            "amount",
            name=DEC,
            version=1,
            parameters={"scale": "2", "connect.decimal.precision": "12"},
        ),
        _f(
            "string",
            "status",
            name="io.debezium.data.Enum",
            version=1,
            parameters={"allowed": "new,paid,shipped,cancelled"},
        ),
        _f("int32", "ordered_on", name="io.debezium.time.Date", version=1),
        _f("string", "placed_at", name="io.debezium.time.ZonedTimestamp", version=1),
        _f("string", "meta", name="io.debezium.data.Json", version=1),
        _f("int32", "items"),
        _f("double", "weight"),
    ],
    "events": [
        {
            "type": "string",
            "optional": False,
            "name": "io.debezium.data.Uuid",
            "version": 1,
            "field": "id",
        },
        _f("string", "kind"),
        _f("array", "tags", items={"type": "string", "optional": True}),
        _f("bytes", "payload"),
        _f("int64", "at", name="io.debezium.time.MicroTimestamp", version=1),
        _f("string", "took", name="io.debezium.time.Interval", version=1),
    ],
}
SOURCE = {
    "type": "struct",
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "field": "source",
    "fields": [
        _f("string", "version"),
        _f("string", "connector"),
        _f("string", "name"),
        _f("int64", "ts_ms"),
        _f("string", "snapshot"),
        _f("string", "db"),
        _f("string", "sequence"),
        _f("int64", "ts_us"),
        _f("int64", "ts_ns"),
        _f("string", "schema"),
        _f("string", "table"),
        _f("int64", "txId"),
        _f("int64", "lsn"),
        _f("int64", "xmin"),
    ],
}


def _schema(table: str) -> dict:
    row = {
        "type": "struct",
        "fields": TABLES[table],
        "optional": True,
        "name": f"shop.public.{table}.Value",
    }
    return {
        "type": "struct",
        "optional": False,
        "name": f"shop.public.{table}.Envelope",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            SOURCE,
            {"type": "string", "optional": False, "field": "op"},
            _f("int64", "ts_ms"),
            _f("int64", "ts_us"),
            _f("int64", "ts_ns"),
        ],
    }


def _dec(value: int) -> str:
    return base64.b64encode(
        value.to_bytes(8, "big", signed=True).lstrip(b"\x00") or b"\x00"
    ).decode()


def _row(table: str, rng: random.Random, key: int) -> dict:
    if table == "customers":
        return {
            "id": key,
            "name": f"Customer {key} Ünïcode",
            "email": f"c{key}@example.org",
            "country": rng.choice(["DE", "FR", "US", "JP"]),
            "created_at": 1_700_000_000_000_000 + key,
            "updated_at": "2024-06-01T10:00:00.123456Z",
            "balance": _dec(rng.randrange(10**9)),
            "active": rng.random() < 0.9,
        }
    if table == "orders":
        return {
            "id": key,
            "customer_id": rng.randrange(10**6),
            "amount": _dec(rng.randrange(10**7)),
            "status": rng.choice(["new", "paid", "shipped"]),
            "ordered_on": 19_800 + key % 300,
            "placed_at": "2024-06-01T10:00:00.5Z",
            "meta": '{"channel": "web", "n": 3}',
            "items": rng.randrange(1, 9),
            "weight": rng.random() * 10,
        }
    return {
        "id": f"a0eebc99-9c0b-4ef8-bb6d-{key:012d}",
        "kind": "click",
        "tags": ["a", "b", None][: rng.randrange(4)],
        "payload": base64.b64encode(rng.randbytes(32)).decode(),
        "at": 1_700_000_000_000_000 + key,
        "took": "PT0.25S",
    }


def make_records(count: int, seed: int = 1) -> list[RawRecord]:
    """Realistic Debezium JSON: 60% customers, 30% orders, 10% events; tx of ~4 events."""
    rng = random.Random(seed)
    schemas = {t: _schema(t) for t in TABLES}
    records: list[RawRecord] = []
    lsn, tx, made = 30_000_000, 1000, 0
    last_commit = lsn
    while made < count:
        tx += 1
        records.append(
            RawRecord(
                "shop.transaction",
                None,
                orjson.dumps(
                    {
                        "schema": None,
                        "payload": {
                            "status": "BEGIN",
                            "id": f"{tx}:{lsn}",
                            "event_count": None,
                            "data_collections": None,
                        },
                    }
                ).decode(),
            )
        )
        counts: dict[str, int] = {}
        for _ in range(rng.randrange(1, 8)):
            table = rng.choices(list(TABLES), weights=[6, 3, 1])[0]
            key = rng.randrange(1, 50_000)
            op = rng.choices(["c", "u", "d"], weights=[5, 4, 1])[0]
            row = _row(table, rng, key)
            lsn += rng.randrange(40, 400)
            source = {
                "version": "3.6.3.Final",
                "connector": "postgresql",
                "name": "shop",
                "ts_ms": 1_717_236_000_000 + tx,
                "snapshot": None,
                "db": "shop",
                "sequence": f'["{last_commit}","{lsn}"]',
                "ts_us": 1_717_236_000_000_000,
                "ts_ns": None,
                "schema": "public",
                "table": table,
                "txId": tx,
                "lsn": lsn,
                "xmin": None,
            }
            payload = {
                "before": row if op == "d" else None,
                "after": None if op == "d" else row,
                "source": source,
                "op": op,
                "ts_ms": 1,
                "ts_us": 1,
                "ts_ns": 1,
            }
            key_json = orjson.dumps(
                {
                    "schema": {"type": "struct", "fields": [TABLES[table][0]]},
                    "payload": {TABLES[table][0]["field"]: row["id"]},
                }
            ).decode()
            records.append(
                RawRecord(
                    f"shop.public.{table}",
                    key_json,
                    orjson.dumps({"schema": schemas[table], "payload": payload}).decode(),
                )
            )
            counts[table] = counts.get(table, 0) + 1
            made += 1
        last_commit = lsn = lsn + 50
        records.append(
            RawRecord(
                "shop.transaction",
                None,
                orjson.dumps(
                    {
                        "schema": None,
                        "payload": {
                            "status": "END",
                            "id": f"{tx}:{lsn}",
                            "event_count": sum(counts.values()),
                            "data_collections": [
                                {"data_collection": f"public.{t}", "event_count": n}
                                for t, n in counts.items()
                            ],
                        },
                    }
                ).decode(),
            )
        )
        if tx % 200 == 0:
            records.append(RawRecord("__debezium-heartbeat.shop", None, '{"payload":{}}'))
    return records


def wide_records(count: int) -> list[RawRecord]:
    """The recorded real envelopes of the 31-column every-type table, repeated."""
    path = Path(__file__).resolve().parents[1] / "tests/data/debezium/postgres_roundtrip.jsonl"
    real = [RawRecord(**json.loads(line)) for line in path.read_text().splitlines()]
    rows = [
        r
        for r in real
        if r.destination == "rt.public.alltypes"
        and r.value
        and '"op":"c"' in r.value
        and '"infinity"' not in r.value
    ]
    return [rows[i % len(rows)] for i in range(count)]


def _chunks(records: list[RawRecord], size: int) -> list[list[RawRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def run_decoder(chunks: list[list[RawRecord]]) -> tuple[float, float]:
    decoder = Decoder("postgres")
    start, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        batch = decoder.decode(chunk)
        assert not batch.dead_letters, batch.dead_letters[0].reason
    return time.perf_counter() - start, time.process_time() - cpu


def run_parse_only(chunks: list[list[RawRecord]]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        for record in chunk:
            if record.value is not None:
                orjson.loads(record.value)
    return time.perf_counter() - start, time.process_time() - cpu


def run_naive_from_pylist(chunks: list[list[RawRecord]]) -> tuple[float, float]:
    """Full JSON parse + per-row dicts + pa.Table.from_pylist (no type mapping at all)."""
    start, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        rows: dict[str, list[dict]] = {}
        for record in chunk:
            if record.value is None or record.destination.startswith("__"):
                continue
            payload = orjson.loads(record.value)["payload"]
            if "op" not in payload:
                continue
            row = payload["after"] if payload["op"] != "d" else payload["before"]
            rows.setdefault(record.destination, []).append(
                {**row, "_tm_op": payload["op"], "_tm_lsn": payload["source"]["lsn"]}
            )
        for table_rows in rows.values():
            pa.Table.from_pylist(table_rows)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    records = make_records(args.events)
    events = sum(1 for r in records if r.destination.startswith("shop.public."))
    chunks = _chunks(records, args.chunk)
    figures: dict[str, float] = {}
    wall: dict[str, float] = {}
    for name, fn in (
        ("decoder", run_decoder),
        ("parse_only", run_parse_only),
        ("naive_from_pylist", run_naive_from_pylist),
    ):
        runs = [fn(chunks) for _ in range(args.repeat)]
        best_wall = min(r[0] for r in runs)
        best_cpu = min(r[1] for r in runs)
        figures[name] = events / best_cpu
        wall[name] = events / best_wall
        print(
            f"{name:>20}: {events / best_cpu:>10,.0f} events/s per CPU-second "
            f"({events / best_wall:,.0f}/s wall; best of {args.repeat}, {events:,} events)"
        )
    wide = _chunks(wide_records(args.events // 5), args.chunk)
    wide_cpu = min(run_decoder(wide)[1] for _ in range(args.repeat))
    figures["decoder_wide_every_type"] = (args.events // 5) / wide_cpu
    print(
        f"{'decoder (31 cols)':>20}: {figures['decoder_wide_every_type']:>10,.0f} events/s "
        "per CPU-second (real envelopes of the every-type table)"
    )
    tracemalloc.start()
    run_decoder(chunks[:5])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "bench": "decode",
        "at": datetime.now(UTC).isoformat(),
        "events": events,
        "records": len(records),
        "chunk": args.chunk,
        "events_per_cpu_s": figures,
        "events_per_wall_s": wall,
        "decoder_vs_parse_floor": figures["decoder"] / figures["parse_only"],
        "python_peak_mb_5_chunks": round(peak / 2**20, 1),
        "target_events_per_s": 20_000,
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "machine": platform.machine(),
        "note": "single-threaded; CPU seconds of this process (the machine is shared, so wall "
        "time includes other people's work)",
    }
    out = Path(__file__).parent / "results" / "decode.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

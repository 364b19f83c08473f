"""Round trip: every Postgres type through the real Debezium engine and the decoder.

A table with every type the issue lists gets rows with edge values (NULLs, max-precision
numerics, negative intervals, non-ASCII, empty arrays, +/-infinity). The production embedded
engine (`connectors.postgres.capture`) with `TYPE_SETTINGS` captures the snapshot and the
streamed changes; each decoded value must equal what
psycopg2 returns for that row (converted to the same Python representation).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import struct
import time
import uuid
from decimal import Decimal

import psycopg2
import pyarrow as pa
import pytest

from tidemark.connectors.decode import TYPE_SETTINGS, Decoder
from tidemark.connectors.decode.types import INFINITY_US, MINUS_INFINITY_US
from tidemark.connectors.postgres.capture import open_postgres_engine

pytestmark = [pytest.mark.postgres, pytest.mark.debezium]

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'très bien');
CREATE TABLE alltypes (
  id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint,
  n10_2 numeric(10,2), n38 numeric(38,10), n50 numeric(50,20), nv numeric,
  m money, r4 real, f8 double precision, b boolean,
  c5 char(5), vc varchar(20), t text, u uuid, j json, jb jsonb, by bytea,
  d date, tm time, tm3 time(3), ts timestamp, ts3 timestamp(3), tstz timestamptz, ttz timetz,
  iv interval, ai int[], at text[], an numeric(6,2)[], e mood
);
CREATE TABLE toasty (id int PRIMARY KEY, small int, big text, bbig bytea, abig text[],
                     jbig jsonb);
ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL,
  ALTER COLUMN bbig SET STORAGE EXTERNAL, ALTER COLUMN abig SET STORAGE EXTERNAL,
  ALTER COLUMN jbig SET STORAGE EXTERNAL;
INSERT INTO alltypes (id, i2, i4, i8, n10_2, nv, t, d, ts, tstz, iv, ai)
  VALUES (1, 1, 2, 3, 1.50, 42, 'from the snapshot', '2024-01-01', '2024-01-01 00:00:00',
          '2024-01-01 00:00:00+00', '1 day', '{1}');
"""

ROWS = [
    # extremes
    """(2, -32768, -2147483648, 9223372036854775807, 99999999.99,
     1234567890123456789012345678.0123456789, 123456789012345678901234567890.12345678901234567890,
     3.14159265358979323846264338327950288419716939937510,
     '-92233720368547758.08', 3.4e38, 1.7976931348623157e308, true,
     'ab', 'héllo ✓ 中文', E'multi\\nline 🐘 \\u00e9\\t"quoted"',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2.50], "ü": "x"}', '{"b": null, "n": 1.10}',
     '\\xdeadbeef00', '2024-02-29', '23:59:59.999999', '12:00:00.123',
     '2024-01-02 03:04:05.678901', '1999-12-31 23:59:59.999', '2024-06-01 12:00:00.000001+02',
     '10:11:12.5+05:30', '-1 year -2 months 3 days -04:05:06.789', '{1,NULL,3}',
     '{"x","","y z","ü"}', '{1.10,NULL,-2.50}', 'très bien')""",
    # all NULL
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    # the other ends and empties
    """(4, 32767, 2147483647, -9223372036854775808, -99999999.99, -0.0000000001,
     -99999999999999999999999999999.99999999999999999999, -0.000000000000000000001,
     '92233720368547758.07', -1.17549435e-38, -2.2250738585072014e-308, false,
     '', '', '', '00000000-0000-0000-0000-000000000000', '[]', '{}', '\\x',
     '0001-01-01', '00:00:00', '00:00:00', '0001-01-01 00:00:00', '9999-12-31 23:59:59.999',
     '9999-12-31 23:59:59.999999+00', '00:00:00+00', '1 year 2 months 3 days 04:05:06.000001',
     '{}', '{}', '{}', 'sad')""",
    # float specials and numeric zero; infinities are checked in their own test
    """(5, 0, 0, 0, 0, 0, 0, 0, 0, 'NaN', '-Infinity', false, 'x', 'x', 'x', NULL, 'null',
     'null', '\\x00', '1970-01-01', '00:00:00.000001', '23:59:59.999', '1970-01-01 00:00:00',
     '1970-01-01 00:00:00.001', '1969-12-31 23:59:59.999999+00', '23:59:59.999999-01',
     '0 seconds', '{NULL}', '{NULL}', '{NULL}', 'ok')""",
]
INFINITIES = (
    "(6, NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', NULL, 'Infinity', 'Infinity', NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, NULL, 'infinity', NULL, 'infinity',"
    " NULL, NULL, NULL, NULL, NULL, NULL),"
    "(7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, '-infinity', NULL, NULL, '-infinity', NULL, '-infinity',"
    " NULL, NULL, NULL, NULL, NULL, NULL)"
)

# Postgres values as psycopg2 returns them, in the representation the decoder produces.
SELECT = """
SELECT id, i2, i4, i8, n10_2, n38, n50, nv, m::numeric, r4, f8, b, c5, vc, t, u::text,
       j::text, jb::text, by, d, tm, tm3, ts, ts3, tstz, ttz,
       (extract(year from iv) * 12 + extract(month from iv))::int, extract(day from iv)::int,
       ((extract(hour from iv) * 3600 + extract(minute from iv) * 60) * 1000000000
         + extract(second from iv) * 1000000000)::bigint,
       ai, at, an, e::text
FROM alltypes WHERE id = ANY(%s) ORDER BY id
"""


def _as_decoded(pg: tuple) -> dict:
    """One psycopg2 row in the Python form of the decoded Arrow values."""
    (
        id_,
        i2,
        i4,
        i8,
        n10_2,
        n38,
        n50,
        nv,
        m,
        r4,
        f8,
        b,
        c5,
        vc,
        t,
        u,
        j,
        jb,
        by,
        d,
        tm,
        tm3,
        ts,
        ts3,
        tstz,
        ttz,
        months,
        days,
        nanos,
        ai,
        at,
        an,
        e,
    ) = pg
    if ttz is not None:  # Debezium normalises timetz to UTC
        moment = dt.datetime.combine(dt.date(2000, 1, 1), ttz.replace(tzinfo=None))
        ttz = (moment - ttz.utcoffset()).time()
    return {
        "id": id_,
        "i2": i2,
        "i4": i4,
        "i8": i8,
        "n10_2": n10_2,
        "n38": n38,
        "n50": n50,
        "nv": nv,
        "m": m,
        "r4": None if r4 is None else _float32(r4),
        "f8": f8,
        "b": b,
        "c5": c5,
        "vc": vc,
        "t": t,
        "u": u,
        "j": j,
        "jb": jb,
        "by": None if by is None else bytes(by),
        "d": d,
        "tm": tm,
        "tm3": tm3,
        "ts": ts,
        "ts3": ts3,
        "tstz": tstz,
        "ttz": ttz,
        "iv": None if months is None else (months, days, nanos),
        "ai": ai,
        "at": at,
        "an": an,
        "e": e,
    }


def _float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _normalise(decoded: dict) -> dict:
    out = {k: v for k, v in decoded.items() if not k.startswith("_tm_")}
    if out["nv"] is not None:
        out["nv"] = Decimal(out["nv"])  # variable-scale numeric is exact decimal text
    if out["iv"] is not None:
        iv = out["iv"]
        out["iv"] = (iv.months, iv.days, iv.nanoseconds)
    return out


def _finite_rows(table) -> list[dict]:
    """Rows without the +/-infinity ones (Python has no date/datetime for those)."""
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.is_in(table.column("id"), pa.array([6, 7])))).to_pylist()


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _collect(engine, records: list, until, timeout: float = 120.0) -> list:
    deadline = time.monotonic() + timeout
    while not until(records):
        assert time.monotonic() < deadline, f"timed out after {len(records)} records"
        batch = engine.poll(0.5)
        if batch:
            records.extend(batch)
            engine.acknowledge(batch[-1])
    return records


def _ends(records: list) -> int:
    return sum(
        1
        for r in records
        if r.destination == "rt.transaction" and r.value is not None and '"END"' in r.value
    )


@pytest.fixture(scope="module")
def captured(postgres, tmp_path_factory):
    """Run the production engine wrapper over the type table once, with TYPE_SETTINGS."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres.url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = postgres.url_for(name)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(DDL)
    engine = open_postgres_engine(
        pipeline=f"dec{uuid.uuid4().hex[:8]}",
        source="rt",
        dsn=url,
        tables=["public.alltypes", "public.toasty"],
        state=tmp_path_factory.mktemp("dbz"),
        heartbeat_ms=500,
        extra=TYPE_SETTINGS,
        signals=False,
    )
    records: list = []
    try:
        _collect(engine, records, lambda rs: any(r.destination == "rt.public.alltypes" for r in rs))
        for row in ROWS:
            cur.execute(f"INSERT INTO alltypes VALUES {row}")
        cur.execute(f"INSERT INTO alltypes VALUES {INFINITIES}")
        cur.execute(
            "INSERT INTO toasty VALUES (1, 1, repeat('ab', 3000),"
            " decode(repeat('00ff', 3000), 'hex'), array_fill('zz'::text, ARRAY[2000]),"
            " to_jsonb(repeat('q', 6000)))"
        )
        cur.execute("BEGIN")
        cur.execute("UPDATE toasty SET small = 2 WHERE id = 1")
        cur.execute("UPDATE alltypes SET i2 = 7, t = 'updated ✓' WHERE id = 2")
        cur.execute("DELETE FROM alltypes WHERE id = 3")
        cur.execute("COMMIT")
        _collect(engine, records, lambda rs: _ends(rs) >= 7)
    finally:
        engine.close()
    if os.environ.get("DUMP_RECORDS"):  # to refresh tests/data/debezium/ by hand
        with open(os.environ["DUMP_RECORDS"], "w") as fh:
            fh.writelines(json.dumps(dataclasses.asdict(r)) + "\n" for r in records)
    batch = Decoder("postgres", target="arrow").decode(records)
    yield batch, url, conn, records
    conn.close()


def test_every_type_round_trips_exactly(captured):
    batch, _, conn, _ = captured
    assert batch.dead_letters == []
    events = batch.changes["rt.public.alltypes"].events
    last = {}
    for row in _finite_rows(events):
        last[row["id"]] = row
    ids = [1, 2, 4, 5]
    with conn.cursor() as cur:
        cur.execute(SELECT, (ids,))
        expected = {row[0]: _as_decoded(row) for row in cur.fetchall()}
    assert sorted(expected) == ids
    for id_ in ids:
        got = _normalise(last[id_])
        want = expected[id_]
        wrong = {k: (got[k], want[k]) for k in want if not _same(got[k], want[k])}
        assert not wrong, f"row {id_}: decoded != postgres for {wrong}"


def test_arrow_types_are_exact(captured):
    batch, _, _, _ = captured
    schema = batch.changes["rt.public.alltypes"].events.schema
    expect = {
        "i2": "int16",
        "i4": "int32",
        "i8": "int64",
        "n10_2": "decimal128(10, 2)",
        "n38": "decimal128(38, 10)",
        "n50": "decimal256(50, 20)",
        "nv": "string",
        "m": "decimal128(38, 2)",
        "r4": "float",
        "f8": "double",
        "b": "bool",
        "u": "string",
        "by": "large_binary",
        "d": "date32[day]",
        "tm": "time64[us]",
        "tm3": "time64[us]",
        "ts": "timestamp[us]",
        "ts3": "timestamp[us]",
        "tstz": "timestamp[us, tz=UTC]",
        "ttz": "time64[us]",
        "iv": "month_day_nano_interval",
        "ai": "list<item: int32>",
        "an": "list<item: decimal128(6, 2)>",
        "e": "string",
        "_tm_source_ts": "timestamp[us, tz=UTC]",
    }
    assert {k: str(schema.field(k).type) for k in expect} == expect


def test_infinities_and_nan_follow_the_documented_mapping(captured):
    batch, _, _, _ = captured
    table = batch.changes["rt.public.alltypes"].events
    ids = table.column("id").to_pylist()
    at = {id_: i for i, id_ in enumerate(ids)}
    raw = {c: table.column(c).cast("int64").to_pylist() for c in ("ts", "tstz")}
    days = table.column("d").cast("int32").to_pylist()
    assert (raw["ts"][at[6]], raw["tstz"][at[6]], days[at[6]]) == (
        INFINITY_US,
        INFINITY_US,
        2**31 - 1,
    )
    assert (raw["ts"][at[7]], raw["tstz"][at[7]], days[at[7]]) == (
        MINUS_INFINITY_US,
        MINUS_INFINITY_US,
        -(2**31),
    )
    f8 = table.column("f8").to_pylist()
    r4 = table.column("r4").to_pylist()
    assert (f8[at[6]], r4[at[6]], r4[at[7]]) == (math.inf, math.inf, -math.inf)
    # decimal.handling.mode=string tells numeric NaN apart from NULL (precise sent NULL).
    assert table.column("nv").to_pylist()[at[6]] == "NaN"


def test_toast_placeholders_are_flagged_not_written(captured):
    batch, _, _, _ = captured
    rows = batch.changes["rt.public.toasty"].events.to_pylist()
    insert, update = rows
    assert insert["_tm_unchanged"] is None and len(insert["big"]) == 6000
    assert update["_tm_op"] == "u" and update["small"] == 2
    assert sorted(update["_tm_unchanged"]) == ["abig", "bbig", "big", "jbig"]
    assert [update[c] for c in ("big", "bbig", "abig", "jbig")] == [None] * 4


def test_transactions_and_positions(captured):
    batch, _, _, _ = captured
    events = batch.changes["rt.public.alltypes"].events
    positions = events.column("_tm_position").to_pylist()
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert all(len(p) == 40 for p in positions)
    ops = events.column("_tm_op").to_pylist()
    assert ops[0] == "r" and ops[-2:] == ["u", "d"]
    # the last transaction touched both tables: its END says so, after all its events
    end = [m for m in batch.transactions if m.status == "END"][-1]
    tx = events.column("_tm_tx_id").to_pylist()[-1]
    assert end.tx_id == tx
    assert end.per_table_counts == {"rt.public.toasty": 1, "rt.public.alltypes": 2}
    assert end.position == max(
        positions[-1],
        batch.changes["rt.public.toasty"].events.column("_tm_position").to_pylist()[-1],
    )
    deleted = _finite_rows(events)[-1]
    assert deleted["id"] == 3 and deleted["_tm_op"] == "d"
    assert batch.tombstones == 0  # the production settings turn delete tombstones off
    assert batch.last_position == max(positions[-1], end.position)


def test_delta_target_round_trips_through_a_delta_table(captured, tmp_path):
    """The default target: every column lands in a real Delta table with its value intact."""
    from deltalake import DeltaTable, write_deltalake

    _, _, conn, records = captured
    events = Decoder("postgres").decode(records).changes["rt.public.alltypes"].events
    write_deltalake(str(tmp_path / "alltypes"), events)
    back = DeltaTable(str(tmp_path / "alltypes")).to_pyarrow_table()
    rows = {r["id"]: r for r in _finite_rows(back) if r["_tm_op"] in ("c", "r")}
    with conn.cursor() as cur:
        cur.execute(SELECT, ([2, 4],))
        expected = {row[0]: _as_decoded(row) for row in cur.fetchall()}
    for id_, want in expected.items():
        got = rows[id_]
        assert got["tm"] == want["tm"].isoformat(timespec="microseconds")
        assert got["ttz"] == want["ttz"].isoformat(timespec="microseconds")
        assert (got["iv"]["months"], got["iv"]["days"], got["iv"]["nanoseconds"]) == want["iv"]
        assert Decimal(got["n50"]) == want["n50"] and got["n38"] == want["n38"]
        assert got["tstz"] == want["tstz"] and got["ts"] == want["ts"]
        assert got["an"] == want["an"] and got["by"] == want["by"]
    # +/-infinity become the ends of the Delta range (delta-rs cannot write the extremes)
    ends = {r["id"]: (r["d"], r["ts"], r["tstz"]) for r in back.to_pylist() if r["id"] in (6, 7)}
    assert ends[6][0] == dt.date(9999, 12, 31) and ends[7][0] == dt.date(1, 1, 1)
    assert ends[6][1] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert ends[7][2] == dt.datetime(1, 1, 1, tzinfo=dt.UTC)

"""Decoding SQL Server change events taken from Debezium's SQL Server connector documentation.

No SQL Server runs here; tests/data/debezium/sqlserver_docs.json holds the documentation's
create/update/delete and transaction-marker examples, plus events for a typed table built
from the documented data type mappings (its `source` and `notes` fields say exactly what).
"""

from __future__ import annotations

import base64
import json
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from tidemark.connectors.decode import Decoder
from tidemark.kernel.records import RawRecord

DATA = json.loads((Path(__file__).parent / "data/debezium/sqlserver_docs.json").read_text())


def _records(*groups: str) -> list[RawRecord]:
    return [RawRecord(**r) for g in groups for r in DATA[g]]


def test_documented_events_decode_into_the_lake_table_without_the_database():
    batch = Decoder("sqlserver").decode(_records("customers"))
    assert batch.dead_letters == [] and batch.tombstones == 1
    assert list(batch.changes) == ["server1.dbo.customers"]
    changes = batch.changes["server1.dbo.customers"]
    assert changes.key_columns == ("id",)
    rows = changes.events.drop_columns(["_tm_before"]).to_pylist()
    assert [(r["_tm_op"], r["email"]) for r in rows] == [
        ("c", "john.doe@example.org"),
        ("u", "noreply@example.org"),
        ("d", "noreply@example.org"),
    ]
    # position = commit_lsn + change_lsn + event_serial_no, fixed width hex
    assert [r["_tm_position"] for r in rows] == [
        "000000270000075800050000002700000758000300000001",
        "0000002700000ac000070000002700000ac0000200000002",
        "0000002700000db000070000002700000db0000500000001",
    ]
    assert rows[1]["_tm_tx_id"] == "00000027:00000ac0:0007"  # the commit LSN
    assert rows[0]["_tm_source_ts"].isoformat() == "2019-06-05T10:11:08.470000+00:00"
    before = changes.events.column("_tm_before").to_pylist()
    assert before[0] is None and before[1]["email"] == "john.doe@example.org"
    assert batch.last_position == rows[-1]["_tm_position"]


def test_order_is_commit_lsn_then_change_lsn_then_serial_whatever_the_arrival_order():
    records = _records("customers", "typed")
    expected = Decoder("sqlserver").decode(records)
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    got = Decoder("sqlserver").decode(shuffled)
    typed = got.changes["server1.dbo.typed"].events
    ids_ops = list(
        zip(typed.column("id").to_pylist(), typed.column("_tm_op").to_pylist(), strict=True)
    )
    # the snapshot row first, then by commit LSN; the primary-key update (same commit and
    # change LSN) is the delete (serial 1) before the create (serial 2)
    assert ids_ops == [(9, "r"), (1, "c"), (2, "c"), (2, "d"), (3, "c")]
    for name in expected.changes:
        positions = got.changes[name].events.column("_tm_position").to_pylist()
        assert positions == sorted(positions)
        assert positions == expected.changes[name].events.column("_tm_position").to_pylist()


def test_sqlserver_types_are_exact():
    typed = (
        Decoder("sqlserver", target="arrow")
        .decode(_records("typed"))
        .changes["server1.dbo.typed"]
        .events
    )
    schema = {f.name: str(f.type) for f in typed.schema}
    assert {
        k: schema[k]
        for k in (
            "price",
            "small_price",
            "amount",
            "guid",
            "blob",
            "at_time",
            "at_time3",
            "legacy",
            "at_micro",
            "at_nano",
            "at_zone",
            "tiny",
            "day",
        )
    } == {
        "price": "decimal128(19, 4)",
        "small_price": "decimal128(10, 4)",
        "amount": "decimal128(38, 6)",
        "guid": "string",
        "blob": "large_binary",
        "at_time": "time64[ns]",
        "at_time3": "time64[us]",
        "legacy": "timestamp[us]",
        "at_micro": "timestamp[us]",
        "at_nano": "timestamp[ns]",
        "at_zone": "timestamp[ns, tz=UTC]",
        "tiny": "int16",
        "day": "date32[day]",
    }
    row = typed.filter(pa.compute.equal(typed.column("id"), 1))

    def raw(column: str) -> int:
        return row.column(column).cast(pa.int64())[0].as_py()

    # money max, smallmoney min, decimal(38,6)
    assert row.column("price")[0].as_py() == Decimal("922337203685477.5807")
    assert row.column("small_price")[0].as_py() == Decimal("-214748.3648")
    assert row.column("amount")[0].as_py() == Decimal("-12345678901234567890123456.789012")
    # datetime2(7) and time(7) keep 100 ns; datetimeoffset(7) too, in UTC
    assert raw("at_nano") == 1704164645123456700
    assert raw("at_time") == 86399999999900
    assert raw("at_zone") == 1717236000123456700
    assert raw("legacy") == 946684799997000 and raw("at_micro") == 1529507596945104
    assert raw("at_time3") == 43200123000
    assert row.column("guid")[0].as_py() == "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"
    assert row.column("label")[0].as_py() == "Grüße, 世界"
    assert row.column("blob")[0].as_py() == b"\x00\xff\x10"
    assert row.column("ratio")[0].as_py() == 1.7976931348623157e308
    assert row.column("tiny")[0].as_py() == 255 and row.column("flag")[0].as_py() is True
    nulls = typed.filter(pa.compute.equal(typed.column("id"), 2)).drop_columns(
        [
            "id",
            "_tm_op",
            "_tm_position",
            "_tm_tx_id",
            "_tm_source_ts",
            "_tm_before",
            "_tm_unchanged",
        ]
    )
    assert all(nulls.column(c).null_count == nulls.num_rows for c in nulls.column_names)


def test_transaction_markers_from_the_documentation():
    batch = Decoder("sqlserver").decode(_records("transactions"))
    begin, end = batch.transactions
    assert (begin.status, begin.tx_id, begin.event_count) == (
        "BEGIN",
        "00000025:00000d08:0025",
        None,
    )
    assert (end.status, end.tx_id, end.event_count) == ("END", "00000025:00000d08:0025", 2)
    assert end.per_table_counts == {"server1.dbo.tablea": 1, "server1.dbo.tableb": 1}
    assert batch.changes == {}


def test_end_marker_carries_the_position_of_its_last_event():
    """Events and their END marker share the commit LSN as transaction id."""
    records = _records("typed")[:2]
    end = json.loads(DATA["transactions"][1]["value"])
    end["payload"].update(
        id="00000030:00000100:0004",
        event_count=2,
        data_collections=[{"data_collection": "testDB.dbo.typed", "event_count": 2}],
    )
    records.append(RawRecord("server1.transaction", None, json.dumps(end)))
    batch = Decoder("sqlserver").decode(records)
    (marker,) = batch.transactions
    assert marker.per_table_counts == {"server1.dbo.typed": 2}
    assert (
        marker.position
        == batch.changes["server1.dbo.typed"].events.column("_tm_position")[-1].as_py()
    )


@pytest.mark.parametrize("bad", ["0000:0001", "zz"])
def test_a_malformed_lsn_is_a_dead_letter_not_an_exception(bad):
    good, broken = _records("customers")[:2]
    value = json.loads(broken.value)
    value["payload"]["source"]["commit_lsn"] = bad
    batch = Decoder("sqlserver").decode(
        [good, RawRecord(broken.destination, broken.key, json.dumps(value), "test")]
    )
    assert batch.changes["server1.dbo.customers"].events.num_rows == 1
    (letter,) = batch.dead_letters
    assert letter.table == "server1.dbo.customers" and bad in letter.reason
    assert letter.raw_value == json.dumps(value) and letter.origin == "test"


def test_base64_fixture_sanity():
    """The fixture's money value is the documented unscaled big-endian encoding."""
    price = json.loads(DATA["typed"][0]["value"])["payload"]["after"]["price"]
    assert int.from_bytes(base64.b64decode(price), "big", signed=True) == 2**63 - 1


def test_delta_target_stores_every_sqlserver_type(tmp_path):
    """The default target writes to a real Delta table; time(7) keeps its 100 ns as text."""
    from deltalake import DeltaTable, write_deltalake

    events = Decoder("sqlserver").decode(_records("typed")).changes["server1.dbo.typed"].events
    write_deltalake(str(tmp_path / "typed"), events)
    back = DeltaTable(str(tmp_path / "typed")).to_pyarrow_table()
    row = next(r for r in back.to_pylist() if r["id"] == 1)
    assert row["at_time"] == "23:59:59.999999900" and row["at_time3"] == "12:00:00.123000"
    assert row["at_nano"].isoformat() == "2024-01-02T03:04:05.123456"  # µs in the lake
    assert row["price"] == Decimal("922337203685477.5807")

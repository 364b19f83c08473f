"""Decoder behaviour on real Postgres envelopes recorded from the embedded engine.

tests/data/debezium/postgres_roundtrip.jsonl: the type table of test_decode_postgres_types
(snapshot, inserts, a TOAST update, a multi-table transaction with a delete).
tests/data/debezium/postgres_toast_identity.jsonl: TOAST columns (text, bytea, text[], int[],
jsonb), a REPLICA IDENTITY FULL table (before images, a primary-key update) and a keyless table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from tidemark.connectors.decode import Decoder, decode_records
from tidemark.connectors.decode.decoder import _split
from tidemark.connectors.decode.types import decimal_text, parse_interval
from tidemark.kernel.records import RawRecord

DATA = Path(__file__).parent / "data/debezium"


def _load(name: str) -> list[RawRecord]:
    return [RawRecord(**json.loads(line)) for line in (DATA / name).read_text().splitlines()]


ROUNDTRIP = _load("postgres_roundtrip.jsonl")
TOAST = _load("postgres_toast_identity.jsonl")


def test_counts_markers_heartbeats_and_tombstones():
    batch = Decoder("postgres").decode(ROUNDTRIP)
    assert batch.dead_letters == []
    assert batch.heartbeats == sum(
        r.destination.startswith("__debezium-heartbeat") for r in ROUNDTRIP
    )
    assert batch.tombstones == sum(r.value is None for r in ROUNDTRIP)
    begins = [m for m in batch.transactions if m.status == "BEGIN"]
    ends = [m for m in batch.transactions if m.status == "END"]
    assert len(begins) == len(ends) == 7
    assert [m.tx_id for m in begins] == [m.tx_id for m in ends]  # "745:31093120" -> "745"
    assert all(m.tx_id.isdigit() for m in ends)
    events = sum(t.events.num_rows for t in batch.changes.values())
    snapshot = sum(t.events.column("_tm_op").to_pylist().count("r") for t in batch.changes.values())
    assert sum(m.event_count for m in ends) == events - snapshot


def test_a_consumer_can_tell_when_a_transaction_is_complete():
    batch = Decoder("postgres").decode(ROUNDTRIP)
    for end in (m for m in batch.transactions if m.status == "END"):
        seen = {
            name: t.events.column("_tm_tx_id").to_pylist().count(end.tx_id)
            for name, t in batch.changes.items()
        }
        assert {k: v for k, v in seen.items() if v} == end.per_table_counts
        tops = [
            max(
                p
                for p, tx in zip(
                    t.events.column("_tm_position").to_pylist(),
                    t.events.column("_tm_tx_id").to_pylist(),
                    strict=True,
                )
                if tx == end.tx_id
            )
            for name, t in batch.changes.items()
            if seen[name]
        ]
        assert end.position == max(tops)


def test_positions_sort_snapshot_first_and_are_distinct():
    events = Decoder("postgres").decode(ROUNDTRIP).changes["rt.public.alltypes"].events
    positions = events.column("_tm_position").to_pylist()
    ops = events.column("_tm_op").to_pylist()
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert ops.index("c") > max(i for i, op in enumerate(ops) if op == "r")
    # snapshot rows belong to no transaction: a batcher waiting for END must not wait on them
    tx = events.column("_tm_tx_id").to_pylist()
    assert all((t is None) == (op == "r") for t, op in zip(tx, ops, strict=True))


def test_snapshot_positions_keep_increasing_across_batches():
    snapshot = [r for r in ROUNDTRIP if r.value and '"op":"r"' in r.value]
    decoder = Decoder("postgres")
    first = decoder.decode(snapshot).changes["rt.public.alltypes"].events
    second = decoder.decode(snapshot).changes["rt.public.alltypes"].events
    assert second.column("_tm_position")[0].as_py() > first.column("_tm_position")[-1].as_py()


def test_the_first_transaction_after_a_snapshot_sorts_after_it():
    """Its `sequence` has no last-commit LSN yet: it must still sort after the snapshot."""
    decoder = Decoder("postgres")
    batch = decoder.decode(ROUNDTRIP)
    events = batch.changes["rt.public.alltypes"].events
    first_streamed = json.loads(
        next(r.value for r in ROUNDTRIP if r.value and '"op":"c"' in r.value)
    )
    assert json.loads(first_streamed["payload"]["source"]["sequence"])[0] is None
    assert events.column("_tm_op")[1].as_py() == "c"
    assert events.column("_tm_position")[1].as_py() > events.column("_tm_position")[0].as_py()


def test_resume_from_a_stored_position_keeps_new_events_above_it():
    decoder = Decoder("postgres")
    decoder.resume_from("rt", "ffff000000000000" + "0" * 24)
    streamed = [r for r in ROUNDTRIP if r.value and '"op":"c"' in r.value][:1]
    position = decoder.decode(streamed).last_position
    assert position is not None and position > "ffff000000000000" + "0" * 24


def test_toast_placeholders_of_every_kind_are_flagged_and_nulled():
    batch = Decoder("postgres").decode(TOAST)
    rows = batch.changes["src.public.toasty"].events.to_pylist()
    insert, update = rows
    assert insert["_tm_unchanged"] is None
    assert len(insert["big"]) == 6000 and insert["bbig"][:2] == b"\x00\xff"
    assert insert["ibig"][:3] == [7, 7, 7] and len(insert["abig"]) == 2000
    assert sorted(update["_tm_unchanged"]) == ["abig", "bbig", "big", "ibig", "jbig"]
    assert {c: update[c] for c in update["_tm_unchanged"]} == dict.fromkeys(update["_tm_unchanged"])
    assert update["small"] == 2


def test_replica_identity_full_gives_before_images_and_key_changes():
    events = Decoder("postgres").decode(TOAST).changes["src.public.fullrow"].events
    rows = events.to_pylist()
    assert [(r["_tm_op"], r["id"], r["v"]) for r in rows] == [
        ("c", 1, "a"),
        ("u", 1, "b"),
        ("d", 1, "b"),
        ("c", 2, "b"),
        ("d", 2, "b"),
    ]
    assert rows[0]["_tm_before"] is None
    assert rows[1]["_tm_before"] == {"id": 1, "v": "a", "n": pytest.approx(1.5)}
    assert str(rows[1]["_tm_before"]["n"]) == "1.5"
    assert events.schema.field("_tm_before").type == pa.struct(
        [("id", pa.int32()), ("v", pa.string()), ("n", pa.decimal128(5, 1))]
    )


def test_keyless_tables_are_keyed_by_their_row_image_and_keys_can_be_overridden():
    batch = Decoder("postgres").decode(TOAST)
    assert batch.changes["src.public.nokey"].key_columns == ("_tm_row",)
    assert batch.changes["src.public.fullrow"].key_columns == ("id",)
    # the row image is the identity: an update is the old row leaving and the new arriving
    nokey = batch.changes["src.public.nokey"].events
    assert [(r["_tm_op"], r["a"], r["b"]) for r in nokey.to_pylist()] == [
        ("c", 1, "x"),
        ("d", 1, "x"),
        ("c", 1, "y"),
        ("d", 1, "y"),
    ]
    rows = nokey.column("_tm_row").to_pylist()
    assert rows[0] == rows[1] != rows[2] == rows[3]  # a delete finds the row its insert made
    positions = nokey.column("_tm_position").to_pylist()
    assert positions == sorted(positions) and len(set(positions)) == 4
    keyed = decode_records(TOAST, source_kind="postgres", key_columns={"src.public.nokey": ("a",)})
    assert keyed.changes["src.public.nokey"].key_columns == ("a",)
    assert keyed.changes["src.public.nokey"].events.column("_tm_op").to_pylist() == ["c", "u", "d"]


def test_bad_records_become_dead_letters_and_the_rest_goes_on():
    good = [r for r in ROUNDTRIP if r.destination == "rt.public.alltypes" and r.value]
    broken_decimal = json.loads(good[1].value)
    broken_decimal["payload"]["after"]["n10_2"] = "%%%not base64"
    unknown_type = json.loads(good[2].value)
    unknown_type["schema"]["fields"][1]["fields"][1]["type"] = "quaternion"
    bad = [
        RawRecord("rt.public.alltypes", None, "{not json", "kafka:t/0@1"),
        RawRecord("rt.public.alltypes", good[1].key, json.dumps(broken_decimal), "kafka:t/0@2"),
        RawRecord("rt.public.alltypes", good[2].key, json.dumps(unknown_type), "kafka:t/0@3"),
        RawRecord("rt.public.alltypes", None, '{"schema":null,"payload":{"hello":1}}', "x"),
    ]
    batch = Decoder("postgres").decode([*good, *bad])
    assert batch.changes["rt.public.alltypes"].events.num_rows == len(good)
    reasons = {d.origin: d.reason for d in batch.dead_letters}
    assert set(reasons) == {"kafka:t/0@1", "kafka:t/0@2", "kafka:t/0@3", "x"}
    assert "quaternion" in reasons["kafka:t/0@3"]
    assert all("\n" not in r for r in reasons.values())
    letter = next(d for d in batch.dead_letters if d.origin == "kafka:t/0@2")
    assert letter.table == "rt.public.alltypes" and letter.raw_value == bad[1].value
    assert letter.position is not None and len(letter.position) == 40


def test_the_schema_fast_path_equals_a_full_parse():
    for record in ROUNDTRIP:
        if record.value is None:
            continue
        schema_text, payload = _split(record.value)
        full = json.loads(record.value)
        assert payload == full["payload"]
        assert json.loads(schema_text) == full["schema"]


def test_a_schema_change_within_a_batch_unifies_the_columns():
    records = [r for r in TOAST if r.destination == "src.public.fullrow" and r.value]
    changed = json.loads(records[1].value)
    for part in ("before", "after"):
        field = {"type": "string", "optional": True, "field": "added"}
        next(f for f in changed["schema"]["fields"] if f["field"] == part)["fields"].append(field)
        changed["payload"][part]["added"] = "new"
    batch = Decoder("postgres").decode(
        [records[0], RawRecord(records[1].destination, records[1].key, json.dumps(changed))]
    )
    events = batch.changes["src.public.fullrow"].events
    assert events.column("added").to_pylist() == [None, "new"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P-1Y-2M3DT-4H-5M-6.789S", (-14, 3, -(4 * 3600 + 5 * 60 + 6.789) * 10**9)),
        ("P1Y2M3DT4H5M6.000001S", (14, 3, (4 * 3600 + 5 * 60 + 6.000001) * 10**9)),
        ("P0D", (0, 0, 0)),
        ("PT-0.5S", (0, 0, -500_000_000)),
    ],
)
def test_intervals_parse_exactly(text, expected):
    months, days, nanos = parse_interval(text)
    assert (months, days) == expected[:2] and nanos == round(expected[2])


@pytest.mark.parametrize(
    ("unscaled", "scale", "text"),
    [(150, 2, "1.50"), (-1, 10, "-0.0000000001"), (42, 0, "42"), (5, -2, "500"), (0, 3, "0.000")],
)
def test_decimal_text_is_exact(unscaled, scale, text):
    assert decimal_text(unscaled, scale) == text


def test_decoded_batches_feed_the_milestoning_core():
    """The core carries the TOAST values forward from the decoder's flags."""
    from datetime import UTC, datetime

    from tidemark.stream_processors.milestoning.core import milestone

    batch = Decoder("postgres").decode(TOAST)
    toasty = milestone(
        batch.changes["src.public.toasty"], None, batch_id=1, ingested_at=datetime.now(UTC)
    )
    (live,) = toasty.live_upserts.to_pylist()
    assert live["small"] == 2 and len(live["big"]) == 6000 and len(live["abig"]) == 2000
    nokey = milestone(
        batch.changes["src.public.nokey"], None, batch_id=1, ingested_at=datetime.now(UTC)
    )
    assert nokey.live_upserts.num_rows == 0


def test_decoded_chunks_go_through_the_batcher_whole():
    """Engine-sized chunks of real records: the batcher releases every event, whole txs."""
    from tidemark.stream_processors.batching import Batcher

    decoder = Decoder("postgres")
    now = [0.0]
    batcher = Batcher(max_events=3, max_latency_ms=10, clock=lambda: now[0])
    released = []
    for start in range(0, len(ROUNDTRIP), 4):  # split anywhere, even inside transactions
        batcher.add(decoder.decode(ROUNDTRIP[start : start + 4]), source="rt")
        now[0] += 1
        while (batch := batcher.poll()) is not None:
            released.append(batch)
    total = sum(t.events.num_rows for t in Decoder("postgres").decode(ROUNDTRIP).changes.values())
    assert sum(b.event_count for b in released) == total
    # a transaction never spans two batches
    seen: dict[str, int] = {}
    for batch in released:
        for changes in batch.changes.values():
            for tx in set(changes.events.column("_tm_tx_id").to_pylist()) - {None}:
                assert seen.setdefault(tx, batch.batch_id) == batch.batch_id


def test_a_record_without_its_schema_names_the_converter_setting():
    """A connector registered with `value.converter.schemas.enable=false` sends bare payloads:
    each such record is a dead letter whose reason says which setting to change."""
    changes = [r for r in ROUNDTRIP if r.value is not None and '"op"' in r.value]
    bare = []
    for record in changes[:3]:
        _, value = record.enveloped()
        payload = json.loads(value)["payload"]
        bare.append(RawRecord(record.destination, record.key, json.dumps(payload), "kafka:t/0@1"))
    batch = Decoder("postgres").decode(bare)
    assert len(batch.dead_letters) == 3 and not batch.changes
    for letter in batch.dead_letters:
        assert "value.converter.schemas.enable=false" in letter.reason
        assert "tidemark connectors render" in letter.reason

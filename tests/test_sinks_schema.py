"""Schema evolution: added columns appear everywhere, dropped ones stay NULL, bad types go
to the dead letters with a reason while other tables go on."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from deltalake import DeltaTable

from tests.support.lakes import Driver
from tests.support.milestones import event, pos, ts
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.lake import Lake

V1 = pa.schema([("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64())])
V2 = pa.schema(
    [("id", pa.int64()), ("name", pa.string()), ("qty", pa.int64()), ("email", pa.string())]
)
V3 = pa.schema([("id", pa.int64()), ("qty", pa.int32()), ("email", pa.string())])
BAD = pa.schema([("id", pa.int64()), ("qty", pa.string()), ("email", pa.string())])


def test_add_drop_widen_and_reject(lake_root):
    lake = Lake(lake_root(), app_id="schema")
    d = Driver(lake, "s.p.t", V1)
    d.run([event("c", pos(1), ts(1), id=1, name="a", qty=1)])
    # a column added at the source: older rows NULL in every layer
    d.run([event("c", pos(2), ts(2), id=2, name="b", qty=2, email="b@x")], schema=V2)
    for layer in ("changelog", "live", "forensic"):
        rows = d.read(layer)
        assert {r["id"]: r["email"] for r in rows} == {1: None, 2: "b@x"}, layer
    assert [(r["id"], r["email"]) for r in d.read("live")] == [(1, None), (2, "b@x")]
    # a dropped column stays, NULL from then on; int32 into an int64 column widens
    d.run([event("u", pos(3), ts(3), id=1, qty=7, email="a@x")], schema=V3)
    live = d.read("live")
    assert [(r["id"], r["name"], r["qty"], r["email"]) for r in live] == [
        (1, None, 7, "a@x"),
        (2, "b", 2, "b@x"),
    ]
    forensic = d.read("forensic")
    assert [(r["id"], r["name"], r["qty"], r["_tm_valid_to"] is None) for r in forensic] == [
        (1, "a", 1, False),
        (1, None, 7, True),
        (2, "b", 2, True),
    ]
    schema = pa.schema(DeltaTable(table_uri(lake.root, "live", "s.p.t")).schema().to_arrow())
    assert schema.field("qty").type == pa.int64()
    # an int column that turns into text cannot widen: dead letters, the other table goes on
    other = Driver(lake, "s.p.other", V1)
    bad = d.milestone(
        [event("u", pos(4), ts(4), id=2, qty="lots", email="b@x")], batch_id=4, schema=BAD
    )
    good = other.milestone([event("c", pos(5), ts(5), id=9, name="ok", qty=1)], batch_id=4)
    result = lake.commit_batch(
        4, [bad, good], source_positions={"src": pos(5)}, started_at=datetime.now(UTC)
    )
    assert result.dead_letters == 1
    letters = pa.table(lake.dead_letters.read()).to_pylist()
    assert len(letters) == 1
    assert letters[0]["table"] == "s.p.t" and letters[0]["stage"] == "apply"
    assert "`qty`" in letters[0]["reason"] and "cannot widen" in letters[0]["reason"]
    assert '"lots"' in letters[0]["raw_value"] and letters[0]["position"] == pos(4)
    assert d.read("live") == live  # untouched
    assert [r["id"] for r in other.read("live")] == [9]
    log = {r["batch_id"]: r for r in pa.table(lake.batch_log.read()).to_pylist()}
    assert {t["table"]: t["dead_letters"] for t in log[4]["tables"]} == {"s.p.t": 1, "s.p.other": 0}
    # replaying the batch writes no second letter
    lake.commit_batch(
        4, [bad, good], source_positions={"src": pos(5)}, started_at=datetime.now(UTC)
    )
    assert pa.table(lake.dead_letters.read()).num_rows == 1


def test_decoder_dead_letters_are_idempotent(lake_root):
    from tidemark.kernel.dead_letter import DeadLetter

    lake = Lake(lake_root(), app_id="dl")
    letter = DeadLetter(
        table=None,
        raw_key=None,
        raw_value='{"broken": ',
        reason="bad JSON",
        origin="engine",
        position=None,
    )
    lake.write_dead_letters([letter], batch_id=1)
    lake.write_dead_letters([letter], batch_id=1)
    rows = pa.table(lake.dead_letters.read()).to_pylist()
    assert [(r["raw_value"], r["reason"], r["stage"]) for r in rows] == [
        ('{"broken": ', "bad JSON", "decode")
    ]


def test_non_nullable_fields_from_the_core_are_accepted(lake_root):
    """The core may mark `_tm_` fields non-null; Delta reads them back nullable."""
    import dataclasses

    def strict(t: pa.Table) -> pa.Table:
        nullable = ("_tm_valid_to", "_tm_batch_out")
        return t.cast(
            pa.schema(
                [
                    f.with_nullable(not f.name.startswith("_tm_") or f.name in nullable)
                    for f in t.schema
                ]
            )
        )

    lake = Lake(lake_root(), app_id="strict")
    d = Driver(lake, "s.p.t", V1)
    for n, op in ((1, "c"), (2, "u"), (3, "u")):
        mt = d.milestone([event(op, pos(n), ts(n), id=1, name=f"v{n}", qty=n)], batch_id=n)
        mt = dataclasses.replace(
            mt,
            live_upserts=strict(mt.live_upserts),
            forensic_inserts=strict(mt.forensic_inserts),
            changelog=strict(mt.changelog),
        )
        lake.commit_batch(n, [mt], source_positions={}, started_at=datetime.now(UTC))
    assert [r["name"] for r in d.read("forensic")] == ["v1", "v2", "v3"]
    assert [r["name"] for r in d.read("live")] == ["v3"]

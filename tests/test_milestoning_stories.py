"""Milestoning told as stories: load after load into one table, compared row by row.

Each test feeds batches to `milestone`, applies the result to an in-memory lake exactly as the
sinks must, and feeds the open versions back as the next batch's `current`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tests.milestoning_support import (
    ALICE,
    BOB,
    CARO,
    INGESTED,
    D,
    MemoryLake,
    changes,
    events,
    pos,
    rows_of,
    run,
    ts,
)
from tidemark.kernel.columns import (
    BATCH,
    BATCH_OUT,
    INGESTED_AT,
    OP,
    POSITION,
    SOURCE_TS,
    VALID_TO,
)
from tidemark.stream_processors.milestoning.core import MilestoningError, milestone


def test_load_1_initial_insert_opens_one_version_per_key():
    lake = MemoryLake()
    result = run(
        lake,
        [{**ALICE, "op": "c"}, {**BOB, "op": "c"}, {**CARO, "op": "r", "ts": 3, "pos": 3}],
        batch_id=1,
    )
    assert lake.history((1,), ("name",)) == [("Alice", ts(1), None, 1, None)]
    assert lake.history((2,), ("name",)) == [("Bob", ts(2), None, 1, None)]
    assert lake.history((3,), ("name",)) == [("Carö 🐙", ts(3), None, 1, None)]
    assert rows_of(result.live_upserts, ("id", OP, POSITION, SOURCE_TS, BATCH)) == [
        {"id": 1, OP: "c", POSITION: pos(1), SOURCE_TS: ts(1), BATCH: 1},
        {"id": 2, OP: "c", POSITION: pos(2), SOURCE_TS: ts(2), BATCH: 1},
        {"id": 3, OP: "r", POSITION: pos(3), SOURCE_TS: ts(3), BATCH: 1},
    ]
    assert result.live_deletes.num_rows == 0
    assert result.forensic_closes.num_rows == 0
    assert [r[INGESTED_AT] for r in lake.changelog] == [INGESTED] * 3
    assert result.last_position == pos(3)


def test_load_2_update_and_delete_close_the_open_versions():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}, {**BOB, "op": "c"}], batch_id=1)
    result = run(
        lake,
        [
            {**ALICE, "name": "Alicia", "op": "u", "pos": 10, "ts": 10},
            {"id": 2, "op": "d", "pos": 11, "ts": 11},  # delete: key only (replica identity)
        ],
        batch_id=2,
    )
    assert rows_of(result.forensic_closes) == [
        {"id": 1, VALID_TO: ts(10), BATCH_OUT: 2},
        {"id": 2, VALID_TO: ts(11), BATCH_OUT: 2},
    ]
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(1), ts(10), 1, 2),
        ("Alicia", ts(10), None, 2, None),
    ]
    assert lake.history((2,), ("name",)) == [("Bob", ts(2), ts(11), 1, 2)]
    assert rows_of(result.live_deletes) == [{"id": 2, POSITION: pos(11)}]
    assert lake.live_rows(("id", "name")) == {(1,): {"id": 1, "name": "Alicia"}}


def test_load_3_a_deleted_key_comes_back_as_a_new_version():
    lake = MemoryLake()
    run(lake, [{**BOB, "op": "c"}], batch_id=1)
    run(lake, [{"id": 2, "op": "d", "pos": 5, "ts": 5}], batch_id=2)
    result = run(lake, [{**BOB, "name": "Bob II", "op": "c", "pos": 9, "ts": 9}], batch_id=3)
    assert result.forensic_closes.num_rows == 0  # nothing open: the delete closed it
    assert lake.history((2,), ("name",)) == [
        ("Bob", ts(1), ts(5), 1, 2),
        ("Bob II", ts(9), None, 3, None),
    ]
    assert lake.as_of(ts(6)) == {}
    assert lake.as_of(ts(9))[(2,)]["name"] == "Bob II"


def test_delete_and_reinsert_in_one_batch():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    run(
        lake,
        [
            {"id": 1, "op": "d", "pos": 5, "ts": 5},
            {**ALICE, "op": "c", "pos": 6, "ts": 6},  # same values, still a new version
        ],
        batch_id=2,
    )
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(1), ts(5), 1, 2),
        ("Alice", ts(6), None, 2, None),
    ]
    assert lake.as_of(ts(5.5)) == {}


def test_several_changes_to_one_key_in_one_transaction_chain_with_zero_length_intervals():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    run(
        lake,
        [
            {**ALICE, "name": "A2", "op": "u", "pos": 5, "ts": 5, "tx": 7},
            {**ALICE, "name": "A3", "op": "u", "pos": 6, "ts": 5, "tx": 7},
            {**ALICE, "name": "A4", "op": "u", "pos": 7, "ts": 5, "tx": 7},
        ],
        batch_id=2,
    )
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(1), ts(5), 1, 2),
        ("A2", ts(5), ts(5), 2, 2),
        ("A3", ts(5), ts(5), 2, 2),
        ("A4", ts(5), None, 2, None),
    ]
    # Zero-length versions are never visible as of any instant: the transaction is atomic.
    assert lake.as_of(ts(5))[(1,)]["name"] == "A4"
    assert lake.as_of(ts(4.999999))[(1,)]["name"] == "Alice"
    assert lake.live_rows(("name",)) == {(1,): {"name": "A4"}}


def test_primary_key_update_is_a_delete_of_the_old_key_and_a_create_of_the_new():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    run(
        lake,
        [
            {**ALICE, "op": "d", "pos": 5, "ts": 5, "tx": 9},
            {**ALICE, "id": 100, "op": "c", "pos": 6, "ts": 5, "tx": 9},
        ],
        batch_id=2,
    )
    assert lake.history((1,), ("name",)) == [("Alice", ts(1), ts(5), 1, 2)]
    assert lake.history((100,), ("name",)) == [("Alice", ts(5), None, 2, None)]
    assert set(lake.live) == {(100,)}
    assert set(lake.as_of(ts(5))) == {(100,)}


def test_toast_placeholders_take_the_previous_versions_value():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    # From the open version in the lake, then through a run of placeholders in the batch.
    run(
        lake,
        [
            {**ALICE, "name": "A2", "note": None, "unchanged": ["note"], "op": "u", "pos": 5},
            {**ALICE, "name": "A3", "note": None, "unchanged": ["note"], "op": "u", "pos": 6},
            {**ALICE, "name": "A4", "note": "fresh", "op": "u", "pos": 7},
            {**ALICE, "name": "A5", "note": None, "unchanged": ["note"], "op": "u", "pos": 8},
        ],
        batch_id=2,
    )
    assert [v[:2] for v in lake.history((1,), ("name", "note"))] == [
        ("Alice", "long text 1"),
        ("A2", "long text 1"),
        ("A3", "long text 1"),
        ("A4", "fresh"),
        ("A5", "fresh"),
    ]
    assert lake.live_rows(("note",)) == {(1,): {"note": "fresh"}}
    # The changelog keeps the event as it came: NULL plus the placeholder list.
    assert [(r["note"], r["_tm_unchanged"]) for r in lake.changelog[-4:]] == [
        (None, ["note"]),
        (None, ["note"]),
        ("fresh", []),
        (None, ["note"]),
    ]


def test_a_genuine_null_is_not_a_placeholder():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    run(lake, [{**ALICE, "note": None, "op": "u", "pos": 5}], batch_id=2)
    assert [v[0] for v in lake.history((1,), ("note",))] == ["long text 1", None]


def test_replaying_a_batch_changes_nothing():
    lake = MemoryLake()
    batch = [{**ALICE, "op": "c"}, {**ALICE, "name": "A2", "op": "u", "pos": 2}]
    run(lake, batch, batch_id=1)
    result = run(lake, batch, batch_id=2)
    for part in (
        "changelog",
        "live_upserts",
        "live_deletes",
        "forensic_inserts",
        "forensic_closes",
    ):
        assert getattr(result, part).num_rows == 0, part
    # A batch that overlaps the last one: only the new tail counts.
    result = run(lake, [*batch, {**ALICE, "name": "A3", "op": "u", "pos": 3}], batch_id=3)
    assert rows_of(result.forensic_inserts, ("name",)) == [{"name": "A3"}]
    assert result.changelog.num_rows == 1


def test_applied_position_drops_replays_of_keys_without_an_open_version():
    lake = MemoryLake()
    batch = [{**ALICE, "op": "c"}, {"id": 1, "op": "d", "pos": 2}]
    first = run(lake, batch, batch_id=1)
    result = run(lake, batch, batch_id=2, applied_position=first.last_position)
    assert result.forensic_inserts.num_rows == 0
    assert result.changelog.num_rows == 0
    assert result.last_position == pos(2)


def test_values_pass_through_exactly():
    lake = MemoryLake()
    plus_five = timezone(timedelta(hours=5))
    row = {
        "id": 1,
        "name": "naïve — 日本語 \u0000 \U0001f600",
        "amount": D("9999999999.99"),
        "seen": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=plus_five),
        "blob": b"\x00\xff\x80binary",
        "note": "",
    }
    result = run(lake, [{**row, "op": "c"}], batch_id=1)
    expected = {**row, "seen": row["seen"].astimezone(UTC)}
    for table in (result.forensic_inserts, result.live_upserts, result.changelog):
        got = rows_of(table, tuple(row))[0]
        assert got == expected
        assert got["amount"].as_tuple() == expected["amount"].as_tuple()
    assert result.forensic_inserts.schema.field("amount").type == pa.decimal128(12, 2)


def test_composite_keys():
    lake = MemoryLake(keys=("id", "name"))
    run(
        lake,
        [{**ALICE, "op": "c"}, {**ALICE, "name": "other", "op": "c"}],
        batch_id=1,
        keys=("id", "name"),
    )
    result = run(
        lake,
        [{**ALICE, "amount": D("1.00"), "op": "u", "pos": 5}],
        batch_id=2,
        keys=("id", "name"),
    )
    assert rows_of(result.forensic_closes) == [
        {"id": 1, "name": "Alice", VALID_TO: ts(5), BATCH_OUT: 2}
    ]
    assert lake.live_rows(("amount",)) == {
        (1, "Alice"): {"amount": D("1.00")},
        (1, "other"): {"amount": D("10.00")},
    }


def test_schema_drift_between_current_and_batch():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    current = lake.current({(1,)}).drop_columns(["blob"])  # the lake predates `blob`
    # The batch has a new column `extra` and lacks `note` (dropped at the source).
    table = events([{**ALICE, "op": "u", "pos": 5}]).drop_columns(["note"])
    table = table.add_column(1, "extra", pa.array(["x"]))
    result = milestone(changes(table), current, batch_id=2, ingested_at=INGESTED)
    inserted = result.forensic_inserts.to_pylist()
    assert len(inserted) == 1  # `extra` appeared with a value: a change
    assert inserted[0]["extra"] == "x"
    assert inserted[0]["note"] is None
    assert rows_of(result.forensic_closes) == [{"id": 1, VALID_TO: ts(5), BATCH_OUT: 2}]
    # A new column that arrives NULL changes nothing.
    table = events([{**ALICE, "op": "u", "pos": 5}]).add_column(
        1, "extra", pa.nulls(1, pa.string())
    )
    result = milestone(changes(table), lake.current({(1,)}), batch_id=2, ingested_at=INGESTED)
    assert result.forensic_inserts.num_rows == 0


def test_empty_batch():
    result = milestone(changes(events([])), None, batch_id=1, ingested_at=INGESTED)
    assert result.last_position == ""
    assert result.forensic_inserts.num_rows == 0
    assert result.changelog.num_rows == 0


def test_events_without_toast_column_and_without_current_op():
    lake = MemoryLake()
    table = events([{**ALICE, "op": "c"}], toast=False)
    lake.apply(milestone(changes(table), None, batch_id=1, ingested_at=INGESTED))
    current = lake.current({(1,)}).drop_columns([OP, VALID_TO])
    table = events([{**ALICE, "name": "x", "op": "u", "pos": 4}], toast=False)
    result = milestone(changes(table), current, batch_id=2, ingested_at=INGESTED)
    assert rows_of(result.forensic_closes) == [{"id": 1, VALID_TO: ts(4), BATCH_OUT: 2}]


def test_missing_key_column_is_a_clear_error():
    table = events([{**ALICE, "op": "c"}]).drop_columns(["id"])
    with pytest.raises(MilestoningError, match=r"lack column\(s\) `id`"):
        milestone(changes(table), None, batch_id=1, ingested_at=INGESTED)
    with pytest.raises(MilestoningError, match="no key columns"):
        milestone(changes(events([]), ()), None, batch_id=1, ingested_at=INGESTED)


def test_incompatible_column_types_are_a_clear_error():
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    current = lake.current({(1,)})
    current = current.set_column(
        current.schema.get_field_index("blob"), "blob", pa.array([[1]], pa.list_(pa.int64()))
    )
    with pytest.raises(MilestoningError, match="column types do not match"):
        milestone(
            changes(events([{**ALICE, "op": "u", "pos": 3}])),
            current,
            batch_id=2,
            ingested_at=INGESTED,
        )


def test_a_placeholder_with_no_earlier_value_stays_null(caplog):
    table = events([{**ALICE, "note": None, "unchanged": ["note"], "op": "u"}])
    result = milestone(changes(table), None, batch_id=1, ingested_at=INGESTED)
    assert rows_of(result.forensic_inserts, ("note",)) == [{"note": None}]
    assert "no earlier value" in caplog.text


def test_events_out_of_position_order_are_applied_in_position_order():
    table = events(
        [{**ALICE, "name": "later", "op": "u", "pos": 2}, {**ALICE, "op": "c", "pos": 1}]
    )
    result = milestone(changes(table), None, batch_id=1, ingested_at=INGESTED)
    assert rows_of(result.live_upserts, ("name",)) == [{"name": "later"}]
    assert rows_of(result.forensic_inserts, ("name", VALID_TO)) == [
        {"name": "Alice", VALID_TO: ts(2)},
        {"name": "later", VALID_TO: None},
    ]


def test_current_with_closed_or_duplicate_open_versions_is_tolerated(caplog):
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "c"}], batch_id=1)
    run(lake, [{**ALICE, "name": "A2", "op": "u", "pos": 2}], batch_id=2)
    everything = lake.current(None)  # only the open one...
    closed = pa.Table.from_pylist(
        [{**r} for r in lake.forensic if r[VALID_TO] is not None], everything.schema
    )
    stale_open = closed.set_column(
        closed.schema.get_field_index(VALID_TO),
        VALID_TO,
        pa.nulls(1, everything.schema.field(VALID_TO).type),
    )
    # ...plus a closed version (ignored) and a stale "open" copy of it (newest kept).
    current = pa.concat_tables([everything, closed, stale_open])
    result = milestone(
        changes(events([{**ALICE, "name": "A3", "op": "u", "pos": 3}])),
        current,
        batch_id=3,
        ingested_at=INGESTED,
    )
    assert rows_of(result.forensic_closes) == [{"id": 1, VALID_TO: ts(3), BATCH_OUT: 3}]
    assert "several open versions" in caplog.text


def test_current_may_hold_more_keys_than_the_batch():
    lake = MemoryLake()
    run(lake, [{**ALICE, "id": i, "op": "c", "pos": i} for i in range(1, 30)], batch_id=1)
    result = milestone(
        changes(events([{**ALICE, "id": 7, "name": "x", "op": "u", "pos": 40}])),
        lake.current(None),  # every open version, not just key 7's
        batch_id=2,
        ingested_at=INGESTED,
    )
    assert rows_of(result.forensic_closes) == [{"id": 7, VALID_TO: ts(40), BATCH_OUT: 2}]
    assert rows_of(result.forensic_inserts, ("id", "name")) == [{"id": 7, "name": "x"}]


def test_a_change_stamped_before_the_snapshot_row_it_follows_never_overlaps():
    """Debezium stamps snapshot rows with their read time; a change streamed after the
    snapshot point can carry an earlier commit time. Intervals must still not overlap."""
    lake = MemoryLake()
    run(lake, [{**ALICE, "op": "r", "pos": 1, "ts": 10}], batch_id=1)
    run(lake, [{**ALICE, "name": "Alicia", "op": "u", "pos": 2, "ts": 7}], batch_id=2)
    run(lake, [{**ALICE, "name": "Ali", "op": "u", "pos": 3, "ts": 12}], batch_id=3)
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(10), ts(10), 1, 2),
        ("Alicia", ts(10), ts(12), 2, 3),
        ("Ali", ts(12), None, 3, None),
    ]
    # Within one batch too, and the live row keeps the change's own source time.
    lake = MemoryLake()
    result = run(
        lake,
        [
            {**ALICE, "op": "r", "pos": 1, "ts": 10},
            {**ALICE, "name": "Alicia", "op": "u", "pos": 2, "ts": 7},
        ],
        batch_id=1,
    )
    assert lake.history((1,), ("name",)) == [
        ("Alice", ts(10), ts(10), 1, 1),
        ("Alicia", ts(10), None, 1, None),
    ]
    assert rows_of(result.live_upserts, ("id", SOURCE_TS)) == [{"id": 1, SOURCE_TS: ts(7)}]

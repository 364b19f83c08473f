"""Decoded events as JSON-ready dicts (what `tidemark tail` can print)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from tidemark.connectors.decode import Decoder
from tidemark.connectors.decode.jsonl import decoded_events
from tidemark.kernel.records import RawRecord

DATA = Path(__file__).parent / "data/debezium"


def _events(markers: bool = False, target: str = "arrow") -> list[dict]:
    records = [
        RawRecord(**json.loads(line))
        for line in (DATA / "postgres_roundtrip.jsonl").read_text().splitlines()
    ]
    return decoded_events(Decoder("postgres", target=target).decode(records), markers=markers)


def test_values_are_exact_and_json_safe():
    events = _events()
    lines = [orjson.loads(orjson.dumps(e)) for e in events]  # survives JSON unchanged
    assert lines == events
    by_id = {e["key"]["id"]: e["after"] for e in events if e["after"] and e["op"] == "c"}
    assert by_id[2]["n50"] == "123456789012345678901234567890.12345678901234567890"
    assert by_id[4]["n38"] == "-0.0000000001" and by_id[5]["n38"] == "0.0000000000"
    assert by_id[2]["by"] == "3q2+7wA=" and by_id[2]["an"] == ["1.10", None, "-2.50"]
    assert by_id[2]["iv"] == {"months": -14, "days": 3, "nanoseconds": -14706789000000}
    assert by_id[2]["tstz"] == "2024-06-01T10:00:00.000001Z"
    assert by_id[2]["ts"] == "2024-01-02T03:04:05.678901"
    assert (by_id[6]["d"], by_id[6]["ts"], by_id[6]["tstz"]) == ("infinity",) * 3
    assert (by_id[7]["d"], by_id[7]["ts"], by_id[7]["tstz"]) == ("-infinity",) * 3
    assert (by_id[5]["r4"], by_id[5]["f8"], by_id[6]["f8"]) == ("NaN", "-Infinity", "Infinity")


def test_markers_wrap_their_transactions():
    lines = _events(markers=True)
    open_tx = None
    for line in lines:
        if line.get("marker") == "BEGIN":
            assert open_tx is None
            open_tx = line["tx"]
        elif line.get("marker") == "END":
            assert line["tx"] == open_tx
            open_tx = None
        elif line["op"] != "r":
            assert line["tx"] == open_tx
    assert open_tx is None
    update = next(e for e in lines if e.get("op") == "u" and e["table"] == "rt.public.toasty")
    assert sorted(update["unchanged"]) == ["abig", "bbig", "big", "jbig"]


def test_the_delta_target_renders_the_same_values_where_it_keeps_them():
    exact = {(e["table"], e["position"]): e for e in _events()}
    stored = {(e["table"], e["position"]): e for e in _events(target="delta")}
    assert exact.keys() == stored.keys()
    for key, event in stored.items():
        row, want = event["after"], exact[key]["after"]
        if row is None or row.get("id") in (6, 7):  # infinities differ by design
            continue
        assert row == want

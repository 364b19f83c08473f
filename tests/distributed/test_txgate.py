"""The transaction gate with recorded Debezium envelopes: records wait for their
transaction's END marker (Postgres ids are `txId:lsn`, different on every event)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tidemark.stream_processors.distributed.lane import KafkaRecord
from tidemark.stream_processors.distributed.txgate import TransactionGate, transaction_id, tx_key

DATA = Path(__file__).resolve().parents[1] / "data" / "debezium" / "postgres_toast_identity.jsonl"


def _recorded():
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    changes = [
        KafkaRecord(i, r["key"].encode(), r["value"].encode())
        for i, r in enumerate(
            r for r in rows if r["destination"] == "src.public.fullrow" and r["value"]
        )
    ]
    markers = [r["value"].encode() for r in rows if r["destination"] == "src.transaction"]
    return changes, markers


def test_records_wait_for_their_end_marker():
    changes, markers = _recorded()
    gate = TransactionGate()
    assert gate.committable("lane", "t", changes) == 0  # no END seen yet
    ends = [m for m in markers if json.loads(m)["payload"]["status"] == "END"]
    first_tx = transaction_id(changes[0].value)
    for marker in ends:  # feed only the END of the first record's transaction
        if tx_key(json.loads(marker)["payload"]["id"]) == first_tx:
            gate.on_marker(marker)
    done = gate.committable("lane", "t", changes)
    assert 1 <= done < len(changes)
    assert all(transaction_id(r.value) == first_tx for r in changes[:done])
    for marker in markers:
        gate.on_marker(marker)
    assert gate.committable("lane", "t", changes) == len(changes)


def test_postgres_transaction_ids_compare_by_txid():
    assert tx_key("756:35597656") == tx_key("756:35598000") == "756"
    assert tx_key("00000027:00000758:0005") == "00000027:00000758:0005"  # SQL Server LSN


def test_a_lost_end_marker_holds_records_only_so_long():
    changes, _ = _recorded()
    gate = TransactionGate(max_hold_s=0.3)
    assert gate.committable("lane", "t", changes) == 0  # starts holding
    time.sleep(0.4)
    assert gate.committable("lane", "t", changes) == len(changes)  # then gives up, logged

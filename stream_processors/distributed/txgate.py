"""Keep source transactions whole across topics with Debezium's transaction topic.

Debezium writes one topic per table, so a transaction that touches several tables arrives
in several topics, in no particular order. With `provide.transaction.metadata=true` it also
writes BEGIN/END markers to `<source>.transaction`, and every change event names its
transaction. A lane commits a record only once its transaction's END marker has been seen:
the events of a transaction in a partition precede its END, so when a lane commits, it
commits whole transactions. The gate reads every partition of the transaction topics itself
(outside the consumer group), because the END of a transaction can sit in any of them.

The reader follows the transaction topics as they appear: a worker may start before Kafka
Connect has written a source's first transaction (its topic does not exist yet), and the
topic is created when Connect writes its first BEGIN, before that transaction's changes, so
a record that names a transaction always finds its topic followed (looked for every
`REFRESH_S`), read from its first offset.

Limits: the gate cannot make two tables' commits one atomic step (they are separate Delta
tables, possibly on separate workers), so a reader may briefly see the transaction in one
table before the other; records wait at most `max_hold_s` for an END (then commit anyway,
logged), so a lost marker cannot stall a table.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson

from tidemark.stream_processors.distributed.lane import KafkaRecord

log = logging.getLogger(__name__)

REFRESH_S = 2.0


_PG_TX = re.compile(r"^(\d+):\d+$")


def tx_key(tx_id: str) -> str:
    """The stable part of a transaction id: Debezium's Postgres ids are `txId:lsn` with the
    LSN of the event (BEGIN, each change and END differ), so only `txId` identifies the
    transaction. SQL Server ids (the commit LSN) are stable as they are."""
    match = _PG_TX.match(tx_id)
    return match.group(1) if match else tx_id


def transaction_id(value: bytes | None) -> str | None:
    """The transaction id a Debezium change event names (None: snapshot, tombstone)."""
    if not value:
        return None
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    payload = envelope.get("payload", envelope) if isinstance(envelope, dict) else None
    tx = payload.get("transaction") if isinstance(payload, dict) else None
    if not isinstance(tx, dict) or tx.get("id") is None:
        return None
    return tx_key(str(tx["id"]))


class TransactionGate:
    """Remembers END markers; tells lanes how much of their pending records may commit.

    Args:
        max_hold_s: longest a record waits for its transaction's END marker.
        capacity: END markers remembered (oldest forgotten first).
    """

    def __init__(self, *, max_hold_s: float = 30.0, capacity: int = 1_000_000) -> None:
        self.max_hold_s = max_hold_s
        self.capacity = capacity
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._held_since: dict[str, float] = {}

    def on_marker(self, value: bytes | None) -> None:
        """Feed one record of a transaction topic."""
        if not value:
            return
        envelope = orjson.loads(value)
        payload = envelope.get("payload", envelope)
        if payload.get("status") == "END":
            with self._lock:
                self._ended[tx_key(str(payload["id"]))] = None
                while len(self._ended) > self.capacity:
                    self._ended.popitem(last=False)

    def ended(self, tx_id: str) -> bool:
        with self._lock:
            return tx_id in self._ended

    def state(self) -> dict[str, Any]:
        """What the gate knows now (for `tidemark status`): END markers remembered, and
        the lanes holding records for an END with how long they have waited."""
        now = time.monotonic()
        with self._lock:
            return {
                "markers": len(self._ended),
                "holding": {lane: round(now - t, 1) for lane, t in self._held_since.items()},
            }

    def committable(self, lane: str, table: str, records: Sequence[KafkaRecord]) -> int:
        """Length of the longest prefix of `records` that holds only finished transactions."""
        count = len(records)
        while count > 0:
            tx = transaction_id(records[count - 1].value)
            if tx is None or self.ended(tx):
                break
            count -= 1
        if count == len(records):
            self._held_since.pop(lane, None)
            return count
        since = self._held_since.setdefault(lane, time.monotonic())
        if time.monotonic() - since > self.max_hold_s:
            log.warning(
                "lane %s (%s): no END marker for %s record(s) after %.0fs; committing them anyway",
                lane,
                table,
                len(records) - count,
                self.max_hold_s,
            )
            self._held_since.pop(lane, None)
            return len(records)
        return count


class TransactionTopicReader:
    """Reads every partition of the transaction topics into a gate, in a daemon thread."""

    def __init__(self, gate: TransactionGate, *, bootstrap: str, topics: Sequence[str]) -> None:
        self.gate = gate
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tx-topics", daemon=True)
        self._lock = threading.Lock()
        self._followed: set[str] = set()
        self.ready = threading.Event()
        """Set once the topics that existed at start are followed."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def followed(self) -> list[str]:
        """The transaction topics being read (the others do not exist yet)."""
        with self._lock:
            return sorted(self._followed)

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer: Any = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "tidemark-txgate-unused",
                "enable.auto.commit": False,
            }
        )
        assigned: set[tuple[str, int]] = set()
        looked = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() - looked >= REFRESH_S:
                    looked = time.monotonic()
                    new = self._new_partitions(consumer, assigned)
                    if new:
                        consumer.incremental_assign([TopicPartition(t, p, 0) for t, p in new])
                        assigned.update(new)
                        with self._lock:
                            self._followed.update(t for t, _ in new)
                        log.info("transaction gate follows %s", sorted({t for t, _ in new}))
                    self.ready.set()
                if not assigned:
                    self._stop.wait(0.2)
                    continue
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    if msg.error() is None:
                        self.gate.on_marker(msg.value())
        finally:
            self.ready.set()
            consumer.close()

    def _new_partitions(
        self, consumer: Any, assigned: set[tuple[str, int]]
    ) -> set[tuple[str, int]]:
        """Partitions of the transaction topics that exist now and are not read yet."""
        try:
            metadata = consumer.list_topics(timeout=10)
        except Exception as exc:  # broker away for a moment: look again later
            log.warning("transaction gate cannot list topics: %s", exc)
            return set()
        return {
            (topic, number)
            for topic in self.topics
            if topic in metadata.topics
            for number in metadata.topics[topic].partitions
            if (topic, number) not in assigned
        }

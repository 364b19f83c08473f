"""Kafka outputs of the worker: the dead-letter topic and the compacted live topics.

Both are published right before the batch's lake commit (after the zombie check), so every
change that reaches the lake reaches them, also across a kill -9 between the two: the batch
is read, applied and published again after the restart. They may therefore run a moment
ahead of the lake and repeat (at least once): a live topic's consumer keeps the highest
position per key, and dead letters carry their origin (`kafka:topic/partition@offset`) so
consumers can drop repeats.

Live topic `<prefix>.live.<table>`: key = the key columns as a JSON object, value = the
current row as JSON (source columns plus `_tm_op`, `_tm_position`, `_tm_source_ts`), and a
tombstone (null value, the delete's position in the `tm_position` header) when the row is
deleted, so a consumer that reads the topic from the start, keeping per key the record with
the highest position, ends with exactly the live table.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tidemark.kernel.columns import BATCH, OP, POSITION, Op
from tidemark.kernel.model import MilestonedTable
from tidemark.stream_processors.distributed.errors import OutputUnavailable
from tidemark.stream_processors.distributed.topics import dead_letter_topic, live_topic

log = logging.getLogger(__name__)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact: never a float
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise TypeError(type(value).__name__)


def to_json(row: dict[str, Any]) -> bytes:
    """A row as JSON: decimals as strings, timestamps ISO 8601, bytes base64."""
    return orjson.dumps(row, default=_default, option=orjson.OPT_NON_STR_KEYS)


POSITION_HEADER = "tm_position"
"""The header of a tombstone that carries its delete's `_tm_position` (a tombstone has no
value to hold it), so a consumer can drop an older record of the key that comes after."""

Message = tuple[bytes, bytes | None, str | None]
"""(key, value or None for a tombstone, the tombstone's delete position)."""


def live_messages(table: MilestonedTable) -> list[Message]:
    """The messages of one batch: upserts, then tombstones for deleted keys."""
    keys = list(table.key_columns)
    upserts: pa.Table = table.live_upserts
    upserts = upserts.drop_columns([c for c in (BATCH,) if c in upserts.column_names])
    out: list[Message] = []
    for row in upserts.to_pylist():
        out.append((to_json({k: row[k] for k in keys}), to_json(row), None))
    deleted_at = _delete_positions(table)
    for row in table.live_deletes.select(keys).to_pylist():
        key = to_json(row)
        out.append((key, None, deleted_at.get(key)))
    return out


def _delete_positions(table: MilestonedTable) -> dict[bytes, str]:
    """Key (as JSON) -> the position of its last delete event in the batch."""
    changelog = table.changelog
    if changelog.num_rows == 0 or OP not in changelog.column_names:
        return {}
    deletes = changelog.filter(pc.equal(changelog.column(OP), Op.DELETE.value))
    found: dict[bytes, str] = {}
    for row in deletes.select([*table.key_columns, POSITION]).to_pylist():
        key = to_json({k: row[k] for k in table.key_columns})
        position = str(row[POSITION])
        if position > found.get(key, ""):
            found[key] = position
    return found


def ensure_topics(
    bootstrap: str, *, dead_letters: str, live: Sequence[str], partitions: int = 1
) -> list[str]:
    """Create the output topics that are missing: live topics compacted (the current row
    per key survives, deleted keys vanish after their tombstone), dead letters plain.
    Returns the topics this call created (not those another worker created meanwhile)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = [NewTopic(dead_letters, num_partitions=partitions, replication_factor=-1)]
    wanted += [
        NewTopic(
            t,
            num_partitions=partitions,
            replication_factor=-1,
            config={"cleanup.policy": "compact"},
        )
        for t in live
    ]
    missing = [t for t in wanted if t.topic not in existing]
    created = []
    for topic, future in admin.create_topics(missing).items() if missing else []:
        try:
            future.result(timeout=15)
            created.append(topic)
        except Exception as exc:  # created meanwhile by another worker: fine
            if "already exists" not in str(exc).lower():
                raise OutputUnavailable(
                    f"cannot create topic `{topic}`: {exc}",
                    hint="create it by hand or check broker ACLs",
                ) from exc
            log.debug("topic %s appeared meanwhile", topic)
    return created


def live_rows_messages(rows: pa.Table, key_columns: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """(key, value) of rows of a live table (its `_tm_` columns as they are in the lake)."""
    keep = [c for c in rows.column_names if c != BATCH]
    return [
        (to_json({k: row[k] for k in key_columns}), to_json(row))
        for row in rows.select(keep).to_pylist()
    ]


class KafkaOutputs:
    """Publishes dead letters and (optionally) live rows with one idempotent producer.

    Args:
        bootstrap: Kafka bootstrap servers.
        pipeline: names the dead-letter topic.
        live_prefix: when set, publish `<live_prefix>.live.<table>` topics.
    """

    def __init__(self, *, bootstrap: str, pipeline: str, live_prefix: str | None) -> None:
        from confluent_kafka import Producer

        self.pipeline = pipeline
        self.live_prefix = live_prefix
        self._producer: Any = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
        )
        self._unseeded: set[str] = set()
        self._read_live: Callable[[str], pa.Table | None] | None = None

    def dead_letters(self, letters: Sequence[Any]) -> None:
        topic = dead_letter_topic(self.pipeline)
        for letter in letters:
            body = {
                "table": letter.table,
                "reason": letter.reason,
                "origin": letter.origin,
                "position": letter.position,
                "raw_key": letter.raw_key,
                "raw_value": letter.raw_value,
            }
            key = None if letter.raw_key is None else letter.raw_key.encode()
            self._producer.produce(topic, key=key, value=orjson.dumps(body))
        self._flush()

    def live(self, table: MilestonedTable) -> None:
        if self.live_prefix is None:
            return
        self._seed(table)
        topic = live_topic(self.live_prefix, table.table)
        for key, value, deleted_at in live_messages(table):
            headers = [(POSITION_HEADER, deleted_at.encode())] if deleted_at else None
            self._producer.produce(topic, key=key, value=value, headers=headers)
            self._producer.poll(0)
        self._flush()

    def seed_from(self, tables: Sequence[str], read: Callable[[str], pa.Table | None]) -> None:
        """Live topics of `tables` were created by this worker (its first start, or a new
        broker): before their first batch, they get the lake's live rows from `read(table)`
        (the key columns come with the batch), so that a consumer reading them from offset
        0 gets the whole table, not only the rows changed since."""
        self._unseeded.update(tables)
        self._read_live = read

    def _seed(self, table: MilestonedTable) -> None:
        if table.table not in self._unseeded or self._read_live is None:
            return
        self._unseeded.discard(table.table)
        rows = self._read_live(table.table)
        if rows is None or rows.num_rows == 0:
            return
        topic = live_topic(self.live_prefix or "", table.table)
        for key, value in live_rows_messages(rows, table.key_columns):
            self._producer.produce(topic, key=key, value=value)
            self._producer.poll(0)
        log.info("live topic %s seeded with %s rows from the lake", topic, rows.num_rows)

    def _flush(self) -> None:
        left = self._producer.flush(30)
        if left:
            raise OutputUnavailable(
                f"`{left}` message(s) not delivered to Kafka within 30s",
                hint="check the brokers; the batch is replayed on restart",
            )

    def close(self) -> None:
        self._producer.flush(10)

"""Bulk fetch: records from Faust's consumer to the agents a fetch at a time.

Faust delivers each message on its own: a `Message`, a task racing the flow-control event,
an `Event`, a queue hop and an ack, about 100 µs per record on this machine (8-11k records/s
with a no-op agent). Tidemark needs none of it: the lake, not Kafka's committed offsets,
says what is applied. `BulkConsumer` keeps Faust's consumer (the aiokafka consumer thread,
group membership, assignment and rebalance callbacks, flow control) and replaces only its
drain loop: each fetch (`max_poll_records` per call, all assigned partitions) is handed to
the topic's agent as lists of `KafkaRecord`, one per partition. Records of topics without an
inbox still take Faust's per-message path.

It also applies seeks between fetches (`request_seek`): a lane's offset read from the lake
on assignment, or a lane's request to re-read after a gap, never while a fetch is running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import client as aiokafka_client  # type: ignore[import-untyped]
from aiokafka.protocol.metadata import MetadataRequest  # type: ignore[import-untyped]
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from tidemark.stream_processors.distributed.lane import KafkaRecord

log = logging.getLogger(__name__)

Chunk = tuple[int, list[KafkaRecord]]
"""One partition's records of one fetch: (partition, records in offset order)."""


class Inbox:
    """A topic's fetched chunks, bounded by records (a fetch brings a few hundred records
    per partition, so a bound in chunks would starve a batch of 20,000)."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.records = 0
        self.queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self.space = asyncio.Event()
        self.space.set()

    async def put(self, chunk: Chunk) -> None:
        """Add a chunk; waits while the inbox holds `max_records` or more."""
        while self.records >= self.max_records:
            self.space.clear()
            await self.space.wait()
        self.records += len(chunk[1])
        self.queue.put_nowait(chunk)

    def _taken(self, chunk: Chunk) -> Chunk:
        self.records -= len(chunk[1])
        if self.records < self.max_records:
            self.space.set()
        return chunk

    async def get(self) -> Chunk:
        return self._taken(await self.queue.get())

    def get_nowait(self) -> Chunk:
        return self._taken(self.queue.get_nowait())


class BulkConsumer(Consumer):
    """Faust's aiokafka consumer whose drain loop hands whole fetches to topic inboxes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inboxes: dict[str, Inbox] = {}
        self.seeks: dict[TP, int] = {}

    def inbox(self, topic: str, *, max_records: int = 40_000) -> Inbox:
        """`topic`'s fetched chunks (bounded: a full inbox pauses fetching)."""
        if topic not in self.inboxes:
            self.inboxes[topic] = Inbox(max_records)
        return self.inboxes[topic]

    def request_seek(self, tp: TP, offset: int) -> None:
        """Re-read `tp` from `offset` before the next fetch."""
        self.seeks[tp] = offset

    async def _apply_seeks(self) -> None:
        seeks = self.seeks
        if not seeks:
            return
        assigned = self.assignment()
        for tp, offset in list(seeks.items()):
            del seeks[tp]
            if tp in assigned:
                log.info("seek %s/%s to %s", tp.topic, tp.partition, offset)
                await self.seek(tp, offset)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust loop
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        callback = self.callback
        inboxes = self.inboxes
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if not self.flow_active:
                    await self.wait(self.can_resume_flow)  # type: ignore[arg-type]  # an asyncio.Event at run time
                    continue
                await self._apply_seeks()
                records, _ = await self._wait_next_records(1.0)
                if not records or self.should_stop:
                    continue
                for tp, batch in records.items():
                    if not self.flow_active:
                        break  # a rebalance began: the rest is re-fetched after it
                    inbox = inboxes.get(tp.topic)
                    if inbox is None:
                        for record in batch:
                            await callback(self._to_message(tp, record))
                        continue
                    await inbox.put((tp.partition, _records(batch)))
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


def _records(batch: Sequence[Any]) -> list[KafkaRecord]:
    return [KafkaRecord(r.offset, r.key, r.value) for r in batch]


class _NoAutoCreate(MetadataRequest):
    """A metadata request that never creates the topics it names."""

    def __init__(
        self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None
    ) -> None:
        super().__init__(topics, allow_auto_topic_creation=bool(allow_auto_topic_creation))


def never_create_topics() -> None:
    """Make this process's aiokafka clients ask for metadata without creating topics.

    aiokafka asks for the metadata of the topics it subscribes to with
    `allow_auto_topic_creation=True` and has no option for it, so a worker started before
    Kafka Connect created the source topics itself, with the broker's default partition
    count instead of the connector's `topic.creation.default.partitions`. With this, a
    missing topic stays missing until Connect creates it; the subscription picks it up at
    the next metadata refresh (`consumer_metadata_max_age_ms`, a few seconds here).
    """
    aiokafka_client.MetadataRequest = _NoAutoCreate
    logging.getLogger("aiokafka.cluster").addFilter(_quiet_missing_topics)


def _quiet_missing_topics(record: logging.LogRecord) -> bool:
    """A topic Connect has not created yet is expected (the worker said so once at start):
    aiokafka logs it as an ERROR at every metadata refresh."""
    return not str(record.msg).startswith("Topic %s not found in cluster metadata")


def install(app: Any) -> BulkConsumer:
    """Give `app` a `BulkConsumer` (before the worker starts); it never creates topics."""
    never_create_topics()
    consumer = BulkConsumer(
        app.transport,
        callback=app.topics.on_message,
        loop=app.transport.loop,
        on_partitions_revoked=app._on_partitions_revoked,
        on_partitions_assigned=app._on_partitions_assigned,
        beacon=app.beacon,
    )
    app.consumer = consumer
    return consumer


async def take(
    inbox: Inbox, *, max_events: int, within: float, on_first: Callable[[], None] | None = None
) -> dict[int, list[KafkaRecord]]:
    """Up to about `max_events` records (whole fetches) within `within` seconds of the first:
    `stream.take`'s contract, a fetch at a time. `on_first` is called when the first arrives."""
    partition, records = await inbox.get()
    if on_first is not None:
        on_first()
    out: dict[int, list[KafkaRecord]] = {partition: records}
    count = len(records)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while count < max_events:
        try:
            partition, records = inbox.get_nowait()
        except asyncio.QueueEmpty:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                partition, records = await asyncio.wait_for(inbox.get(), left)
            except TimeoutError:
                break
        out.setdefault(partition, []).extend(records)
        count += len(records)
    return out

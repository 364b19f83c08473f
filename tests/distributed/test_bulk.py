"""The bulk path's inbox and take: whole fetches per partition, bounded by records, and
`stream.take`'s size/time contract (the worker tests run it against a real broker)."""

from __future__ import annotations

import asyncio
import time

from tidemark.stream_processors.distributed.bulk import Inbox, take
from tidemark.stream_processors.distributed.lane import KafkaRecord


def _records(first: int, n: int) -> list[KafkaRecord]:
    return [KafkaRecord(o, b"k", b"v") for o in range(first, first + n)]


def test_take_gathers_fetches_per_partition_up_to_max_events():
    async def main() -> None:
        inbox = Inbox(max_records=100)
        await inbox.put((0, _records(0, 4)))
        await inbox.put((1, _records(0, 3)))
        await inbox.put((0, _records(4, 4)))
        await inbox.put((2, _records(0, 5)))
        work = await take(inbox, max_events=10, within=5.0)
        # whole fetches: stops at the first that reaches max_events, never splits one
        assert {p: [r.offset for r in rs] for p, rs in work.items()} == {
            0: list(range(8)),
            1: [0, 1, 2],
        }
        assert inbox.records == 5
        rest = await take(inbox, max_events=10, within=0.05)  # time bound: returns early
        assert list(rest) == [2] and len(rest[2]) == 5

    asyncio.run(main())


def test_a_full_inbox_holds_the_fetcher_until_records_are_taken():
    async def main() -> None:
        inbox = Inbox(max_records=6)
        await inbox.put((0, _records(0, 6)))
        blocked = asyncio.create_task(inbox.put((0, _records(6, 6))))
        await asyncio.sleep(0.05)
        assert not blocked.done() and inbox.records == 6
        seen: list[float] = []
        started = time.monotonic()
        work = await take(
            inbox, max_events=100, within=0.2, on_first=lambda: seen.append(time.monotonic())
        )
        await asyncio.wait_for(blocked, 1.0)  # room again: the fetcher goes on
        assert seen and seen[0] - started < 0.1
        got = [r.offset for r in work[0]]
        assert got[:6] == list(range(6))
        rest = (
            []
            if len(got) > 6
            else [r.offset for r in (await take(inbox, max_events=100, within=0.05))[0]]
        )
        assert got[6:] + rest == list(range(6, 12))

    asyncio.run(main())

"""`tidemark` with a worker that dies (as under kill -9) at its Nth live-topic publish of a
batch with streamed changes (snapshot-only batches do not count):
`python -m tests.support.dying_worker -v worker --config FILE ...`, with the environment's
`TIDEMARK_TEST_DIE_AT_PUBLISH=N`.

A kill -9 lands at an instant nobody chooses; this one lands at the instant where a lost
publish would matter most, every time: `os._exit` ends the process there with no cleanup,
no flush and no final commit, as SIGKILL would.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tidemark.stream_processors.distributed import outputs

_calls = 0
_at = int(os.environ.get("TIDEMARK_TEST_DIE_AT_PUBLISH", "0"))
_live = outputs.KafkaOutputs.live


def _dying_live(self: Any, table: Any) -> None:
    global _calls
    ops = set(table.changelog.column("_tm_op").to_pylist()) if table.changelog.num_rows else set()
    if ops - {"r"}:
        _calls += 1
        if _calls == _at:
            os._exit(137)
    _live(self, table)


outputs.KafkaOutputs.live = _dying_live  # type: ignore[method-assign]

if __name__ == "__main__":
    from tidemark.cli import main

    sys.exit(main())

"""A load in a child process, reporting ranges done on stdout (killed by the resume test).

Usage: python -m tests.loading.load_child CONFIG.json STATE_DIR
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from tidemark.config import parse_config
from tidemark.startload import arm_sources


def main() -> None:
    config = parse_config(json.loads(Path(sys.argv[1]).read_text()))
    views = []

    def report() -> None:
        while True:
            done = sum(v.read.done for v in views)
            print(f"done {done}", flush=True)
            time.sleep(0.05)

    threading.Thread(target=report, daemon=True).start()
    arm_sources(config, progress=views.append)
    print("finished", flush=True)


if __name__ == "__main__":
    main()

"""Where Tidemark keeps its local state: `.tidemark/` in the working directory.

Override with TIDEMARK_STATE. Holds the local Postgres cluster, Debezium offsets and logs.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The state directory (created on demand)."""
    path = Path(os.environ.get("TIDEMARK_STATE", ".tidemark")).absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def postgres_dir() -> Path:
    """The local cluster's root under the state directory."""
    return state_dir() / "postgres"

"""The change simulator: realistic OLTP writes into Postgres or SQL Server.

`Simulator(url, profile=..., workers=..., rate=..., seed=..., ledger=...)` with `setup()` and
`run(stop_event, on_progress=...)`; `tidemark simulate` is the CLI on top.
"""

from tidemark.simulator.runner import Progress, Simulator, Summary

__all__ = ["Progress", "Simulator", "Summary"]

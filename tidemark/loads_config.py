"""The configuration of how tables are loaded: `snapshot`, `refresh` and `capture`.

Each is a mapping from `"*"`, a source name or a lake table (`shop.public.orders`) to
settings; for a table, the lake table's entry wins over its source's, which wins over
`"*"`, key by key (as `sla` does). Defaults (docs/loading.md):

```yaml
snapshot:
  "*": {loader: parallel, max_workers: 2, ranges: ctid}   # SQL Server sources: debezium
  shop: {dsn: ${SHOP_REPLICA_DSN}}                          # read the snapshot from a replica
  shop.public.sales: {ranges: {column: sold_at, by: month}}
refresh:
  shop.public.items: {every: 1h}                            # or just: full (every hour)
capture:
  shop.public.orders: {mode: watermark, column: modified_date, every: 30s, overlap: 2m}
```
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidemark.config_types import Duration


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RangesConfig(_Frozen):
    """Ranges by a date or timestamp column (the seeds' month partitions)."""

    column: str = Field(description="A date or timestamp column.")
    by: Literal["day", "month", "year"] = Field(default="month", description="One range per.")


class SnapshotConfig(_Frozen):
    """How a table is snapshotted when it is armed (every key optional; see `resolve`)."""

    loader: Literal["parallel", "debezium"] | None = Field(
        default=None,
        description="parallel (Tidemark copies the table; Postgres) or debezium (its own "
        "snapshot; always for SQL Server). Default parallel.",
    )
    max_workers: int | None = Field(
        default=None, ge=1, le=64, description="Connections reading one table at once (2)."
    )
    rows_per_second: float | None = Field(
        default=None, gt=0, description="Cap on rows read per second, all workers (none)."
    )
    ranges: Literal["ctid", "key"] | RangesConfig | None = Field(
        default=None, description="ctid (default), key (one integer key) or {column, by}."
    )
    rows_per_range: int | None = Field(
        default=None, ge=1000, description="About how many rows a range holds (500000)."
    )
    tables_at_once: int | None = Field(
        default=None, ge=1, le=16, description="Tables loaded at the same time (1)."
    )
    dsn: str | None = Field(
        default=None, description="Read the snapshot from this replica of the source."
    )
    check: Literal["hash", "none"] | None = Field(
        default=None,
        description="At the end of a load: rows and a hash of every row against the snapshot "
        "(hash, the default), or no check.",
    )


class RefreshConfig(_Frozen):
    """A reference table: reloaded whole on a schedule instead of streamed."""

    mode: Literal["full"] = Field(default="full", description="Reload the whole table.")
    every: Duration = Field(default=3600.0, description="How often (default 1h).")


class CaptureConfig(_Frozen):
    """How a table's changes are captured: the log (default) or a watermark column."""

    mode: Literal["log", "watermark"] = Field(default="log", description="log or watermark.")
    column: str | None = Field(default=None, description="The watermark column (watermark).")
    every: Duration = Field(default=30.0, description="Poll interval (default 30s).")
    overlap: Duration = Field(
        default=60.0, description="Re-read this far behind the last watermark (default 1m)."
    )
    deletes_every: Duration = Field(
        default=600.0, description="Key diff that finds deletes (default 10m)."
    )

    @model_validator(mode="after")
    def _column_for_watermark(self) -> CaptureConfig:
        if self.mode == "watermark" and not self.column:
            raise ValueError("mode watermark needs `column`: the watermark column")
        return self


def resolve_snapshot(
    entries: dict[str, SnapshotConfig], *, source: str, table: str, kind: str
) -> SnapshotConfig:
    """The settings of one lake table: `"*"`, then its source's, then its own, key by key;
    then the defaults. A SQL Server source always uses Debezium's snapshot."""
    merged: dict[str, Any] = {
        "loader": "parallel",
        "max_workers": 2,
        "rows_per_second": None,
        "ranges": "ctid",
        "rows_per_range": 500_000,
        "tables_at_once": 1,
        "dsn": None,
        "check": "hash",
    }
    for key in ("*", source, table):
        entry = entries.get(key)
        if entry is not None:
            merged.update({name: getattr(entry, name) for name in entry.model_fields_set})
    if kind != "postgres":
        merged["loader"] = "debezium"
    return SnapshotConfig(**merged)

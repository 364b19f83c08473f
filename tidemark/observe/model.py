"""The status of a pipeline as data: what `/api/status` returns and `tidemark status --json`
prints (pydantic models, so the web API documents them in its OpenAPI schema).

Times are UTC; durations are seconds; positions are the lake's sortable position strings
with a readable `position_label` beside them (Postgres: the commit LSN, `0/1DF1CF0`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidemark.observe.freshness import Colour

TableState = Literal["waiting", "failing", "stopped", "snapshotting", "behind", "streaming"]
CaptureState = Literal["streaming", "stopped", "not started", "unknown"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class LayerReport(_Frozen):
    """One layer of one table."""

    layer: str
    exists: bool = Field(description="The layer's Delta table exists.")
    rows: int | None = Field(default=None, description="Rows (deletion vectors applied).")
    files: int | None = Field(default=None, description="Data files.")
    version: int | None = Field(default=None, description="Delta version read.")
    position: str | None = Field(default=None, description="Last source position committed.")
    position_label: str | None = Field(default=None, description="`position` made readable.")
    committed_at: datetime | None = Field(
        default=None, description="When that position was committed."
    )
    newest_change: datetime | None = Field(
        default=None, description="Source commit time of the newest change the layer holds."
    )
    watermark: datetime | None = Field(
        default=None, description="The layer holds every change of its source committed up to here."
    )
    freshness_s: float | None = Field(
        default=None, description="max(0, source's newest commit time - watermark); None: no data."
    )
    sla_s: float | None = Field(
        default=None, description="The layer's freshness target (None: none)."
    )
    colour: Colour = Field(
        default="none", description="green, amber (over half the SLA), red, none."
    )


class TableReport(_Frozen):
    """One lake table (`<source>.<schema>.<table>`)."""

    table: str
    source: str
    state: TableState = Field(
        description="waiting (no data yet), failing (its newest events went to the dead "
        "letters), stopped (nothing captures its source), snapshotting, behind (a layer "
        "over half its SLA), streaming."
    )
    position: str | None = Field(default=None, description="Lowest last position over its layers.")
    position_label: str | None = None
    committed_at: datetime | None = Field(default=None, description="Its newest layer commit.")
    layers: list[LayerReport]
    rows: dict[str, int] = Field(description="Rows per existing layer.")
    dead_letters: int = 0
    last_dead_letter: datetime | None = None
    events_per_s: float = Field(
        default=0.0, description="Changelog events per second, last minute."
    )
    events_per_minute: list[float] = Field(
        default_factory=list, description="Changelog events per minute, last hour, oldest first."
    )
    consumer_lag: int | None = Field(
        default=None, description="Distributed: records of its topic the lake has not applied."
    )
    breached: list[str] = Field(default_factory=list, description="Layers over their SLA.")
    generation: int = Field(
        default=1, description="1, plus one each time the table was dropped and created again."
    )
    schema_change: str | None = Field(
        default=None, description="Its last schema change: kind, commit time, what the lake did."
    )
    refused: str | None = Field(
        default=None,
        description="Why its events go to the dead letters since a DDL (a type that does not "
        "widen), until it is created again.",
    )


class PartitionReport(_Frozen):
    """Distributed runtime: one partition of a source topic."""

    topic: str
    table: str
    partition: int
    end_offset: int
    lake_offset: int
    lag: int


class ConnectorReport(_Frozen):
    """Distributed runtime: the source's Debezium connector on Kafka Connect."""

    name: str
    state: str
    tasks: list[str] = Field(default_factory=list)
    error: str | None = None
    offsets: dict[str, str] = Field(
        default_factory=dict,
        description="Connect's committed source offset (Debezium's: lsn, txId, ts_usec...).",
    )


class GateReport(_Frozen):
    """Distributed runtime: a worker's transaction gate."""

    on: bool = Field(description="Records wait for their transaction's END marker.")
    follows: list[str] = Field(
        default_factory=list, description="Transaction topics read (others do not exist yet)."
    )
    markers: int = Field(default=0, description="END markers remembered.")
    holding: dict[str, float] = Field(
        default_factory=dict, description="Lanes holding records for an END: seconds waited."
    )


class WorkerReport(_Frozen):
    """Distributed runtime: one `tidemark worker`, from its beacon in the lake."""

    worker: str
    group: str | None = None
    partitions: list[str] = Field(default_factory=list, description="topic/partition held.")
    events: int = 0
    batches: int = 0
    age_s: float = Field(description="Seconds since the beacon was written.")
    alive: bool = Field(description="The beacon is recent (the worker runs).")
    gate: GateReport | None = None


class SourceReport(_Frozen):
    """One source database and its tables."""

    source: str
    kind: str
    runtime: Literal["embedded", "distributed"]
    slot: str | None = Field(default=None, description="Postgres replication slot.")
    capture: CaptureState = Field(
        default="unknown",
        description="streaming (a consumer holds the slot), stopped, not started.",
    )
    lag_bytes: int | None = Field(
        default=None, description="WAL the slot's consumer has not confirmed."
    )
    lag_s: float | None = Field(
        default=None,
        description="Source freshness: its newest commit time minus the lake's watermark.",
    )
    latest_commit: datetime | None = Field(
        default=None, description="The source's newest commit (Postgres track_commit_timestamp)."
    )
    caught_up_at: datetime | None = Field(
        default=None, description="When the running pipeline last found itself caught up."
    )
    commit_times: bool = Field(default=False, description="The source records commit times.")
    error: str | None = Field(default=None, description="Why the source could not be asked.")
    partitions: list[PartitionReport] = Field(default_factory=list)
    connector: ConnectorReport | None = None
    tables: list[TableReport]
    consistent_batch: int | None = Field(
        default=None,
        description="The lake's watermark: as of this batch every table holds whole source "
        'transactions (what query and verify read; docs/pipeline.md, "Transactions of any '
        'size"). None: the lake keeps none (distributed runtime).',
    )
    consistent_position: str | None = Field(
        default=None, description="The source position every table holds whole at that batch."
    )
    splitting: str | None = Field(
        default=None,
        description="Id of a source transaction being committed in parts beyond the watermark.",
    )


class RunnerHealth(_Frozen):
    """What the embedded pipeline last reported (`<state>/health/<pipeline>.json`)."""

    state: str = Field(description="running, retrying (a transient failure) or stopped.")
    error: str | None = Field(default=None, description="The failure being retried.")
    retries: int = Field(default=0, description="Retries since the process started.")
    since: str = Field(description="When this state began (UTC).")


class Breach(_Frozen):
    """A layer whose freshness is over its SLA."""

    table: str
    layer: str
    freshness_s: float
    sla_s: float


class PipelineReport(_Frozen):
    """The whole pipeline: what `tidemark status --json` prints and `/api/status` returns."""

    pipeline: str
    lake: str
    generated_at: datetime
    seconds: float = Field(description="Time taken to compute this report.")
    sources: list[SourceReport]
    breaches: list[Breach] = Field(default_factory=list)
    dead_letters: int = 0
    events_per_minute: list[float] = Field(
        default_factory=list, description="All tables' changelog events per minute, last hour."
    )
    notes: list[str] = Field(default_factory=list, description="What limits these figures.")
    runner: RunnerHealth | None = Field(
        default=None, description="The pipeline process on this machine, when it reported."
    )
    workers: list[WorkerReport] = Field(
        default_factory=list, description="Distributed runtime: the workers' beacons."
    )

    def table(self, name: str) -> TableReport | None:
        return next((t for s in self.sources for t in s.tables if t.table == name), None)

"""One `PipelineReport` from the lake's logs, the sources and the caught-up marks.

`Observer` keeps the lake's tables open and the last report for `cache_s`, so the page's
panels, the API and a Prometheus scrape arriving together share one look. `tidemark status`
builds one report and exits. The current time is taken after the lake was read, so a batch
committed meanwhile can never make a lag negative (what `status` once printed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tidemark.config import PipelineConfig, SourceConfig
from tidemark.health import read_health
from tidemark.kernel.columns import Layer
from tidemark.observe import freshness as fr
from tidemark.observe.lake import LakeMeta, LayerMeta
from tidemark.observe.model import (
    Breach,
    CaptureState,
    ConnectorReport,
    GateReport,
    LayerReport,
    PartitionReport,
    PipelineReport,
    RunnerHealth,
    SourceReport,
    TableReport,
    TableState,
    WorkerReport,
)
from tidemark.observe.records import BATCHES, DeadLetterCounts, dead_letter_counts
from tidemark.observe.source import (
    DistributedProbe,
    SlotProbe,
    probe_distributed,
    probe_postgres,
)
from tidemark.sinks.progress import read_marks
from tidemark.sinks.schema_log import REFUSED
from tidemark.sinks.watermark import Watermark, table_watermark

logger = logging.getLogger(__name__)

MINUTES = 60  # the throughput chart's span
RETRY_UNREACHABLE_S = 15.0


def position_label(position: str | None) -> str | None:
    """A Postgres position as its commit LSN (`0/19F4328`), anything else as it is."""
    if position is None:
        return None
    if len(position) == 40:
        from tidemark.connectors.decode.position import position_lsn
        from tidemark.connectors.postgres.snapshot import format_lsn

        epoch, lsn = position_lsn(position)  # a source adopted by `resync` has an epoch
        return format_lsn(lsn) + (f" (epoch {epoch})" if epoch else "")
    return position


class Observer:
    """Builds pipeline reports for one config, read-only. Thread-safe.

    Args:
        config: the pipeline.
        connect_url: Kafka Connect's REST URL, for the connector state (distributed).
        cache_s: how long a report is reused.
        probe_sources: ask the sources (off: the lake alone, for tests of empty lakes).
        health: the pipeline's health file (`tidemark/health.py`), if it runs here.
    """

    def __init__(
        self,
        config: PipelineConfig,
        *,
        connect_url: str | None = None,
        cache_s: float = 1.0,
        probe_sources: bool = True,
        health: Path | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.connect_url = connect_url
        self.cache_s = cache_s
        self.probe_sources = probe_sources
        self.meta = LakeMeta(config.lake, storage_options=config.storage_options)
        self._lock = threading.Lock()
        self._last: tuple[float, PipelineReport] | None = None
        self._unreachable: dict[str, tuple[float, SlotProbe]] = {}

    def probe(self, source: SourceConfig) -> SlotProbe:
        """Ask a Postgres source; a source that could not be reached is asked again only
        after `RETRY_UNREACHABLE_S` (each attempt can wait for its connect timeout)."""
        failed = self._unreachable.get(source.name)
        if failed is not None and time.monotonic() - failed[0] < RETRY_UNREACHABLE_S:
            return failed[1]
        probe = probe_postgres(self.config, source)
        if probe.error is not None:
            self._unreachable[source.name] = (time.monotonic(), probe)
        else:
            self._unreachable.pop(source.name, None)
        return probe

    def report(self, *, fresh: bool = False) -> PipelineReport:
        """The current report (reused for `cache_s` unless `fresh`)."""
        with self._lock:
            if not fresh and self._last and time.monotonic() - self._last[0] < self.cache_s:
                return self._last[1]
            report = build_report(self)
            self._last = (time.monotonic(), report)
            return report

    def close(self) -> None:
        self.meta.close()


def build_report(observer: Observer) -> PipelineReport:
    """Read everything once and assemble the report (see `freshness.py` for the rules)."""
    started = time.perf_counter()
    config, meta = observer.config, observer.meta
    letters = dead_letter_counts(meta)
    marks = {m.source: m.at for m in read_marks(config.lake, config.storage_options)}
    consistent = _watermark(meta)
    layers = {
        table: {layer: meta.layer(table, layer) for layer in config.layers_for(table)}
        for source in config.sources
        for table in config.lake_tables_of(source)
    }
    probes: dict[str, SlotProbe | None] = {}
    distributed: dict[str, DistributedProbe | None] = {}
    for source in config.sources:
        probes[source.name] = (
            observer.probe(source) if observer.probe_sources and source.kind == "postgres" else None
        )
        distributed[source.name] = (
            probe_distributed(config, source, meta, connect_url=observer.connect_url)
            if observer.probe_sources and config.kafka is not None
            else None
        )
    now = datetime.now(UTC)  # after reading: nothing read can be newer than this
    sources = [
        _source_report(
            config,
            source,
            layers,
            letters,
            probes[source.name],
            distributed[source.name],
            marks.get(source.name),
            meta,
            now,
            consistent,
        )
        for source in config.sources
    ]
    tables = [t for s in sources for t in s.tables]
    health = read_health(observer.health) if observer.health is not None else None
    notes = [
        f"source `{s.source}` does not record commit times (track_commit_timestamp is off): "
        "freshness is measured against its clock, so an idle source looks stale"
        for s in sources
        if s.kind == "postgres"
        and s.error is None
        and not s.commit_times
        and observer.probe_sources
    ]
    return PipelineReport(
        pipeline=config.pipeline,
        lake=config.lake,
        generated_at=now,
        seconds=time.perf_counter() - started,
        sources=sources,
        breaches=[
            Breach(table=t.table, layer=r.layer, freshness_s=r.freshness_s or 0.0, sla_s=r.sla_s)
            for t in tables
            for r in t.layers
            if r.colour == "red" and r.sla_s is not None
        ],
        dead_letters=sum(letters.counts.values()),
        events_per_minute=[
            sum(t.events_per_minute[i] for t in tables if len(t.events_per_minute) > i)
            for i in range(MINUTES)
        ],
        notes=notes,
        runner=RunnerHealth(
            state=health.state, error=health.error, retries=health.retries, since=health.since
        )
        if health
        else None,
        workers=_workers(config) if config.kafka is not None else [],
    )


def _watermark(meta: LakeMeta) -> Watermark | None:
    """The lake's watermark, read once per version of the batch log (`sinks/watermark.py`)."""

    found: Watermark | None = meta.derived(BATCHES, "watermark", table_watermark)
    return found


def _workers(config: PipelineConfig) -> list[WorkerReport]:
    """The distributed workers' beacons (`sinks/beacons.py`)."""
    from tidemark.sinks.beacons import STALE_S, read_beacons

    out = []
    for beacon in read_beacons(config.lake, config.storage_options):
        gate = beacon.get("gate") or {}
        out.append(
            WorkerReport(
                worker=str(beacon.get("worker")),
                group=beacon.get("group"),
                partitions=list(beacon.get("partitions", [])),
                events=int(beacon.get("events", 0)),
                batches=int(beacon.get("batches", 0)),
                age_s=float(beacon["age_s"]),
                alive=float(beacon["age_s"]) < STALE_S,
                gate=GateReport(
                    on=bool(gate.get("on")),
                    follows=list(gate.get("follows", [])),
                    markers=int(gate.get("markers", 0)),
                    holding={k: float(v) for k, v in (gate.get("holding") or {}).items()},
                )
                if gate
                else None,
            )
        )
    return out


def _capture(probe: SlotProbe | None) -> CaptureState:
    if probe is None or probe.error is not None:
        return "unknown"
    if not probe.exists:
        return "not started"
    return "streaming" if probe.active else "stopped"


def _newest_applied(found: dict[Layer, LayerMeta | None]) -> datetime | None:
    """The newest change a table holds: its changelog's, else its newest layer's."""
    changelog = found.get(Layer.CHANGELOG)
    if changelog is not None:
        return changelog.newest_change
    return max((m.newest_change for m in found.values() if m and m.newest_change), default=None)


def _source_report(
    config: PipelineConfig,
    source: SourceConfig,
    layers: dict[str, dict[Layer, LayerMeta | None]],
    letters: DeadLetterCounts,
    probe: SlotProbe | None,
    remote: DistributedProbe | None,
    mark: datetime | None,
    meta: LakeMeta,
    now: datetime,
    consistent: Watermark | None = None,
) -> SourceReport:
    names = config.lake_tables_of(source)
    reference = fr.reference_time(
        latest_commit=probe.latest_commit if probe else None,
        source_clock=probe.clock if probe else None,
        now=now,
    )
    lake_mark = max((t for n in names if (t := _newest_applied(layers[n]))), default=None)
    source_mark = fr.watermark(lake_mark, [mark])
    capture = _capture(probe)
    streamed = any(
        m is not None and m.position is not None and not fr.is_snapshot_position(m.position)
        for n in names
        for m in layers[n].values()
    )
    tables = [
        _with_schema(
            _table_report(
                config,
                source,
                name,
                layers[name],
                letters,
                remote,
                reference,
                source_mark,
                capture=capture,
                streamed=streamed,
                events=meta.events_per_minute(name, now=now, minutes=MINUTES),
            ),
            schema_changes(meta, name),
        )
        for name in names
    ]
    return SourceReport(
        source=source.name,
        kind=source.kind,
        runtime="distributed" if config.kafka is not None else "embedded",
        slot=probe.slot if probe else None,
        capture=capture,
        lag_bytes=probe.lag_bytes if probe else None,
        lag_s=fr.freshness(reference, source_mark),
        latest_commit=probe.latest_commit if probe else None,
        caught_up_at=mark,
        consistent_batch=consistent.batch_id if consistent else None,
        consistent_position=consistent.positions.get(source.name) if consistent else None,
        splitting=consistent.open.get(source.name) if consistent else None,
        commit_times=bool(probe and probe.commit_times),
        error=probe.error if probe else None,
        partitions=[
            PartitionReport(
                topic=p.topic,
                table=p.table,
                partition=p.partition,
                end_offset=p.end_offset,
                lake_offset=p.lake_offset,
                lag=p.lag,
            )
            for p in (remote.partitions if remote else [])
        ],
        connector=ConnectorReport(
            name=remote.connector.name,
            state=remote.connector.state,
            tasks=remote.connector.tasks,
            error=remote.connector.error,
            offsets=remote.connector.offsets,
        )
        if remote and remote.connector
        else None,
        tables=tables,
    )


def _table_report(
    config: PipelineConfig,
    source: SourceConfig,
    name: str,
    found: dict[Layer, LayerMeta | None],
    letters: DeadLetterCounts,
    remote: DistributedProbe | None,
    reference: datetime,
    source_mark: datetime | None,
    *,
    capture: CaptureState,
    streamed: bool,
    events: Sequence[float],
) -> TableReport:
    existing = [m for m in found.values() if m is not None]
    last_commit = max((m.committed_at for m in existing if m.committed_at), default=None)
    last_letter = letters.newest.get(name)
    failing = last_letter is not None and (last_commit is None or last_letter > last_commit)
    lag = remote.table_lag(name) if remote else None
    changelog = found.get(Layer.CHANGELOG)
    sla = config.sla_for(name)
    reports = []
    for layer in (layer for layer in Layer if layer in found):
        m = found[layer]
        if m is None:
            reports.append(LayerReport(layer=layer.value, exists=False, sla_s=sla.for_layer(layer)))
            continue
        own = failing or (lag is not None and lag > 0)
        own = own or (changelog is not None and m.batch != changelog.batch)
        mark = fr.watermark(m.newest_change, []) if own else source_mark
        seconds = fr.freshness(reference, mark)
        reports.append(
            LayerReport(
                layer=layer.value,
                exists=True,
                rows=m.rows,
                files=m.files,
                version=m.version,
                position=m.position,
                position_label=position_label(m.position),
                committed_at=m.committed_at,
                newest_change=m.newest_change,
                watermark=mark,
                freshness_s=seconds,
                sla_s=sla.for_layer(layer),
                colour=fr.colour(seconds, sla.for_layer(layer)),
            )
        )
    positions = [m.position for m in existing]
    position = min(p for p in positions if p) if positions and all(positions) else None
    state: TableState
    if not existing:
        state = "waiting"
    elif failing:
        state = "failing"
    elif not streamed and capture != "streaming" and fr.is_snapshot_position(position):
        state = "snapshotting"  # Debezium holds the slot only once it streams
    elif capture == "stopped":
        state = "stopped"
    elif any(r.colour in ("amber", "red") for r in reports):
        state = "behind"
    else:
        state = "streaming"
    return TableReport(
        table=name,
        source=source.name,
        state=state,
        position=position,
        position_label=position_label(position),
        committed_at=last_commit,
        layers=reports,
        rows={m.layer.value: m.rows for m in existing},
        dead_letters=letters.counts.get(name, 0),
        last_dead_letter=last_letter,
        events_per_s=(events[-1] / 60.0) if events else 0.0,
        events_per_minute=[round(e, 3) for e in events],
        consumer_lag=lag,
        breached=[r.layer for r in reports if r.colour == "red"],
    )


def _with_schema(report: TableReport, changes: list[dict]) -> TableReport:
    """The table's generation, last schema change and refusal (`sinks/schema_log.py`)."""
    if not changes:
        return report
    last = changes[-1]
    outcome = last["outcome"] or ""
    refused = outcome if outcome.startswith(REFUSED) else None
    when = f" at {last['source_ts']:%Y-%m-%d %H:%M:%S}" if last["source_ts"] else ""
    return report.model_copy(
        update={
            "generation": int(last["generation"]),
            "schema_change": f"{last['kind']}{when}: {outcome}",
            "refused": refused,
            "state": "failing" if refused else report.state,
        }
    )


def schema_changes(meta: LakeMeta, table: str) -> list[dict]:
    """The schema log's rows of one table in source order (the log is small: read whole)."""
    rows = meta.derived(
        ("_tidemark", "schema_changes"), "rows", lambda t: t.to_pyarrow_table().to_pylist()
    )
    return sorted((r for r in rows or () if r["table"] == table), key=lambda r: r["position"])


def since_minutes(minutes: float) -> datetime:
    """`now - minutes`, for API filters."""
    return datetime.now(UTC) - timedelta(minutes=minutes)

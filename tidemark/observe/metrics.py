"""Prometheus metrics (prometheus_client): the status figures, and the runtimes' counters.

Three sets, documented name by name in docs/observability.md:

- `StatusCollector`: the figures of `tidemark status`, computed at scrape time from the same
  report (freshness, SLA, rows, dead letters, lag, consumer lag, table state). `serve`, `run`
  and `worker` all register it, so every process answers the same.
- `RunnerMetrics`: what the embedded runner did (events, batches, batch and per-layer commit
  durations as histograms, rows per table and layer, end-to-end lag), fed by its `on_batch`
  reports, and its totals (dead letters, retries, engine reopens) read when scraped.
- `WorkerMetrics`: the same for a distributed worker, fed per topic by the worker app.

Every series carries the `pipeline` label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tidemark.kernel.columns import Layer
from tidemark.observe.report import Observer

logger = logging.getLogger(__name__)

STATES = ("waiting", "failing", "stopped", "snapshotting", "behind", "streaming")
# Commit durations run from ~50 ms (a small batch, local disk) to minutes (a rewrite of a big
# table on an object store).
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
# Counts per batch operation -> (layer, op) labels.
_OPS = {
    "changelog": (Layer.CHANGELOG, "append"),
    "live_upserts": (Layer.LIVE, "upsert"),
    "live_deletes": (Layer.LIVE, "delete"),
    "forensic_inserts": (Layer.FORENSIC, "insert"),
    "forensic_closes": (Layer.FORENSIC, "close"),
}


_TABLE_LAYER = ["table", "layer"]
_STATUS_FAMILIES: dict[str, tuple[str, list[str]]] = {
    "freshness_seconds": ("How far a layer trails its source.", _TABLE_LAYER),
    "sla_seconds": ("A layer's freshness target.", _TABLE_LAYER),
    "sla_breached": ("1 while a layer is over its SLA.", _TABLE_LAYER),
    "rows": ("Rows of a layer (deletion vectors applied).", _TABLE_LAYER),
    "last_commit_timestamp_seconds": ("Unix time of a layer's last position.", _TABLE_LAYER),
    "dead_letters_stored": ("Dead letters stored per table.", ["table"]),
    "table_state": ("1 for a table's current state.", ["table", "state"]),
    "events_per_second": ("Changelog events per second, last minute.", ["table"]),
    "source_lag_bytes": ("WAL the slot's consumer has not confirmed.", ["source"]),
    "source_lag_seconds": ("Source freshness: newest commit minus watermark.", ["source"]),
    "source_capturing": ("1 while a consumer holds the source's slot.", ["source"]),
    "consumer_lag": ("Records of a partition the lake has not applied.", ["topic", "partition"]),
    "status_seconds": ("Time taken to compute the status.", []),
}


class StatusCollector(Collector):
    """The status report as gauges, computed when Prometheus scrapes."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            report = self.observer.report()
        except Exception:  # a scrape must never crash the process; say so and give nothing
            logger.exception("status report for metrics failed")
            return
        p = report.pipeline

        f = {
            key: GaugeMetricFamily(f"tidemark_{key}", doc, labels=["pipeline", *labels])
            for key, (doc, labels) in _STATUS_FAMILIES.items()
        }
        fresh, sla, breached = f["freshness_seconds"], f["sla_seconds"], f["sla_breached"]
        rows, committed = f["rows"], f["last_commit_timestamp_seconds"]
        letters, state, events = f["dead_letters_stored"], f["table_state"], f["events_per_second"]
        lag_bytes, lag_s = f["source_lag_bytes"], f["source_lag_seconds"]
        capture, consumer = f["source_capturing"], f["consumer_lag"]
        for source in report.sources:
            if source.lag_bytes is not None:
                lag_bytes.add_metric([p, source.source], source.lag_bytes)
            if source.lag_s is not None:
                lag_s.add_metric([p, source.source], source.lag_s)
            capture.add_metric([p, source.source], 1.0 if source.capture == "streaming" else 0.0)
            for part in source.partitions:
                consumer.add_metric([p, part.topic, str(part.partition)], part.lag)
            for table in source.tables:
                letters.add_metric([p, table.table], table.dead_letters)
                events.add_metric([p, table.table], table.events_per_s)
                for name in STATES:
                    state.add_metric([p, table.table, name], 1.0 if table.state == name else 0.0)
                for layer in table.layers:
                    labels = [p, table.table, layer.layer]
                    if layer.freshness_s is not None:
                        fresh.add_metric(labels, layer.freshness_s)
                    if layer.sla_s is not None:
                        sla.add_metric(labels, layer.sla_s)
                        breached.add_metric(labels, 1.0 if layer.colour == "red" else 0.0)
                    if layer.rows is not None:
                        rows.add_metric(labels, layer.rows)
                    if layer.committed_at is not None:
                        committed.add_metric(labels, layer.committed_at.timestamp())
        f["status_seconds"].add_metric([p], report.seconds)
        yield from f.values()


class RunnerMetrics:
    """The embedded runner's counters; pass `on_batch` to the runner.

    Args:
        registry: where the metrics live.
        pipeline: the `pipeline` label.
        stats: returns the runner's `RunStats` (retries and engine reopens are read from it
            at scrape time).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        pipeline: str,
        *,
        stats: Callable[[], Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        labels = ["pipeline"]
        self.events = Counter(
            "tidemark_events", "Change events committed.", [*labels, "table"], registry=registry
        )
        self.batches = Counter(
            "tidemark_batches", "Batches committed.", [*labels, "closed_by"], registry=registry
        )
        self.layer_rows = Counter(
            "tidemark_layer_rows",
            "Rows written per table, layer and operation.",
            [*labels, "table", "layer", "op"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tidemark_batch_seconds",
            "From a batch's cut to its record in the batch log (milestoning and commits).",
            labels,
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "tidemark_commit_seconds",
            "One layer's Delta commit, retries included.",
            [*labels, "layer"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "tidemark_lag_seconds",
            "End-to-end lag of the last batch: its lake commit minus its newest source commit.",
            labels,
            registry=registry,
        )
        if stats is not None:
            registry.register(_RunStatsCollector(pipeline, stats))
        self._lock = threading.Lock()

    def on_batch(self, report: Any) -> None:
        """Count one committed batch (`BatchReport`)."""
        p = self.pipeline
        with self._lock:
            self.batches.labels(p, report.closed_by or "unknown").inc()
            for table, count in report.tables.items():
                self.events.labels(p, table).inc(count)
            self.batch_seconds.labels(p).observe(
                max(0.0, (report.committed_at - report.started_at).total_seconds())
            )
            if report.max_source_ts is not None:
                lag = (report.committed_at - report.max_source_ts).total_seconds()
                self.lag.labels(p).set(max(0.0, lag))
            result = report.lake_result
            for commit in getattr(result, "commits", ()) or ():
                if not commit.skipped:
                    self.commit_seconds.labels(p, commit.layer.value).observe(commit.seconds)
            for counts in getattr(result, "counts", ()) or ():
                for name, (layer, op) in _OPS.items():
                    value = getattr(counts, name, 0)
                    if value:
                        self.layer_rows.labels(p, counts.table, layer.value, op).inc(value)


class _RunStatsCollector(Collector):
    """Dead letters, retries and engine reopens, read from the runner's totals when scraped
    (dead letters arise in decoding, milestoning and commits: the totals count them all)."""

    def __init__(self, pipeline: str, stats: Callable[[], Any]) -> None:
        self.pipeline = pipeline
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        totals = self.stats()
        letters = CounterMetricFamily(
            "tidemark_dead_letters", "Events sent to the dead letters.", labels=["pipeline"]
        )
        letters.add_metric([self.pipeline], float(getattr(totals, "dead_letters", 0)))
        yield letters
        retries = CounterMetricFamily(
            "tidemark_retries",
            "Transient failures retried (source or commit).",
            labels=["pipeline"],
        )
        retries.add_metric([self.pipeline], float(getattr(totals, "retries", 0)))
        reopens = CounterMetricFamily(
            "tidemark_engine_reopens",
            "Capture engines reopened after a failure.",
            labels=["pipeline"],
        )
        reopens.add_metric([self.pipeline], float(getattr(totals, "reopened", 0)))
        yield retries
        yield reopens


class WorkerMetrics:
    """A distributed worker's counters; pass `on_outcome` to the worker app."""

    def __init__(
        self, registry: CollectorRegistry, pipeline: str, tables: Mapping[str, str]
    ) -> None:
        self.pipeline = pipeline
        self.tables = dict(tables)  # topic -> lake table
        labels = ["pipeline", "table"]
        self.events = Counter(
            "tidemark_events", "Change events committed.", labels, registry=registry
        )
        self.batches = Counter("tidemark_batches", "Batches committed.", labels, registry=registry)
        self.dead_letters = Counter(
            "tidemark_dead_letters", "Records sent to the dead letters.", labels, registry=registry
        )
        self.seeks = Counter(
            "tidemark_retries",
            "Partitions re-read after a gap or a lost race.",
            labels,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "tidemark_batch_seconds",
            "One batch of one topic, decode to durable commit.",
            labels,
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )

    def on_outcome(self, topic: str, outcome: Any) -> None:
        """Count what one group apply did (`distributed.commits.Outcome`)."""
        labels = (self.pipeline, self.tables.get(topic, topic))
        self.events.labels(*labels).inc(outcome.events)
        self.batches.labels(*labels).inc(outcome.batches)
        self.dead_letters.labels(*labels).inc(outcome.dead_letters)
        self.seeks.labels(*labels).inc(len(getattr(outcome, "seeks", {}) or {}))
        for seconds in outcome.commit_seconds:
            self.commit_seconds.labels(*labels).observe(seconds)


def status_registry(observer: Observer) -> CollectorRegistry:
    """A registry holding the status figures (`StatusCollector`) of `observer`'s pipeline."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(observer))
    return registry


def serve_metrics(registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1") -> None:
    """Expose `registry` at http://host:port/metrics from a daemon thread."""
    start_http_server(port, addr=host, registry=registry)
    logger.info("metrics on http://%s:%s/metrics", host, port)

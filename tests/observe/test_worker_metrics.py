"""A distributed worker's Prometheus counters, fed by what its commits report."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tidemark.observe.metrics import WorkerMetrics
from tidemark.stream_processors.distributed.commits import Outcome as LaneOutcome


def test_worker_counts_events_batches_dead_letters_and_commit_times_per_table() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, "p", {"shop.public.customers": "shop.public.customers"})
    metrics.on_outcome(
        "shop.public.customers",
        LaneOutcome(events=120, batches=2, commit_seconds=[0.3, 1.5], dead_letters=1),
    )
    metrics.on_outcome(
        "shop.public.customers", LaneOutcome(events=5, batches=1, commit_seconds=[0.04])
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    labels = (("pipeline", "p"), ("table", "shop.public.customers"))
    assert samples[("tidemark_events_total", labels)] == 125
    assert samples[("tidemark_batches_total", labels)] == 3
    assert samples[("tidemark_dead_letters_total", labels)] == 1
    assert samples[("tidemark_batch_seconds_count", labels)] == 3
    buckets = {
        dict(key)["le"]: value
        for (name, key), value in samples.items()
        if name == "tidemark_batch_seconds_bucket"
    }
    assert (buckets["0.05"], buckets["0.5"], buckets["2.0"]) == (1, 2, 3)

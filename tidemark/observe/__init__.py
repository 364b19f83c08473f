"""What a running (or stopped) pipeline looks like from outside: read-only, shared by all.

`tidemark status`, the web page (`tidemark serve`, `tidemark/web/`) and the Prometheus
metrics compute their figures here, with the same code, so they always agree:

- `lake.py` reads Delta log metadata (positions, commit times, rows, newest source times,
  events per minute) without reading data files, and caches it per table version;
- `records.py` reads the batch log and the dead letters (the few files a panel needs);
- `source.py` asks each source where it is (Postgres slot lag, latest commit time) and the
  distributed runtime's broker and Kafka Connect (consumer lag, connector state);
- `freshness.py` defines freshness and the SLA colours;
- `report.py` assembles one `PipelineReport` from all of them (what `/api/status` and
  `tidemark status --json` print);
- `lineage.py` draws source tables -> topics -> layers -> gold models;
- `metrics.py` exposes the same figures, and the runtimes' counters, to Prometheus.

Nothing here writes to the lake or to a database.
"""

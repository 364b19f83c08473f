"""The status page: server-rendered HTML (FastAPI + Jinja), a JSON API behind every panel,
and Prometheus metrics. Read-only on the lake and the sources.

Pages: `/` (sources and tables), `/tables/{table}`, `/batches`, `/dead-letters`,
`/lineage`. API (docs/observability.md, and `/openapi.json`): `/api/status` (what `tidemark
status --json` prints), `/api/tables/{table}`, `/api/batches`, `/api/dead-letters`,
`/api/throughput`, `/api/lineage`. Metrics: `/metrics`. Every page and API call reads
through one `Observer`, whose report is reused for a second, so a page and its panels agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tidemark.observe.lineage import Lineage, lineage
from tidemark.observe.model import PipelineReport, TableReport
from tidemark.observe.records import BatchRow, DeadLetterRow, dead_letters, latest_batches
from tidemark.observe.report import Observer
from tidemark.web.charts import lineage_svg, sparkline
from tidemark.web.format import register_filters

HERE = Path(__file__).parent
REFRESH_S = 5

Limit = Annotated[int, Query(ge=1, le=1000, description="Rows to return, newest first.")]
SinceMinutes = Annotated[float | None, Query(gt=0, description="Only rows of the last N minutes.")]


def _since(minutes: float | None) -> datetime | None:
    return None if minutes is None else datetime.now(UTC) - timedelta(minutes=minutes)


def _form_minutes(text: str | None) -> float | None:
    """A form's `since_minutes`: empty means all; anything but a positive number is a 400."""
    if not text:
        return None
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if minutes <= 0:
        raise HTTPException(400, f"since_minutes must be a positive number, not `{text}`")
    return minutes


def create_app(observer: Observer, *, registry: CollectorRegistry | None = None) -> FastAPI:
    """The web app over one observer; `registry` is what `/metrics` exposes."""
    app = FastAPI(
        title=f"Tidemark: {observer.config.pipeline}",
        description="Status of a Tidemark pipeline (read-only). See docs/observability.md.",
        docs_url=None,  # Swagger UI loads from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    register_filters(templates.env)
    templates.env.globals.update(sparkline=sparkline, refresh_s=REFRESH_S)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        report = observer.report()
        return templates.TemplateResponse(
            request, name, {"report": report, "page": name.removesuffix(".html"), **context}
        )

    def table_or_404(table: str) -> TableReport:
        found = observer.report().table(table)
        if found is None:
            raise HTTPException(404, f"no table `{table}` in pipeline `{observer.config.pipeline}`")
        return found

    # -- pages ---------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        return page(request, "index.html")

    @app.get("/tables/{table}", response_class=HTMLResponse, include_in_schema=False)
    def table_page(request: Request, table: str) -> HTMLResponse:
        found = table_or_404(table)
        return page(
            request,
            "table.html",
            table=found,
            batches=latest_batches(observer.meta, limit=20, table=table),
            letters=dead_letters(observer.meta, limit=20, table=table),
        )

    @app.get("/batches", response_class=HTMLResponse, include_in_schema=False)
    def batches_page(
        request: Request,
        table: str | None = None,
        closed_by: str | None = None,
        since_minutes: str | None = None,
        limit: Limit = 100,
    ) -> HTMLResponse:
        rows = latest_batches(
            observer.meta,
            limit=limit,
            table=table or None,
            closed_by=closed_by or None,
            since=_since(_form_minutes(since_minutes)),
        )
        filters = {"table": table, "closed_by": closed_by, "since_minutes": since_minutes}
        return page(request, "batches.html", batches=rows, filters=filters, limit=limit)

    @app.get("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
    def letters_page(
        request: Request,
        table: str | None = None,
        stage: str | None = None,
        q: str | None = None,
        since_minutes: str | None = None,
        limit: Limit = 100,
    ) -> HTMLResponse:
        rows = dead_letters(
            observer.meta,
            limit=limit,
            table=table or None,
            stage=stage or None,
            text=q or None,
            since=_since(_form_minutes(since_minutes)),
        )
        filters = {"table": table, "stage": stage, "q": q, "since_minutes": since_minutes}
        return page(request, "dead_letters.html", letters=rows, filters=filters, limit=limit)

    @app.get("/lineage", response_class=HTMLResponse, include_in_schema=False)
    def lineage_page(request: Request) -> HTMLResponse:
        graph = lineage(observer.config, observer.meta)
        return page(request, "lineage.html", graph=graph, svg=lineage_svg(graph))

    # -- API -----------------------------------------------------------------------------
    @app.get("/api", summary="The API's endpoints")
    def api_index() -> dict[str, str]:
        return {
            "/api/status": "the whole pipeline (what `tidemark status --json` prints)",
            "/api/tables/{table}": "one table",
            "/api/batches": "the newest batches (?table=&closed_by=&since_minutes=&limit=)",
            "/api/dead-letters": "the newest dead letters (?table=&stage=&q=&since_minutes=...)",
            "/api/throughput": "changelog events per minute over the last hour, per table",
            "/api/lineage": "sources -> topics -> layers -> gold models, as nodes and edges",
            "/metrics": "Prometheus metrics",
            "/openapi.json": "the schema of every endpoint",
        }

    @app.get("/api/status", summary="The whole pipeline")
    def api_status() -> PipelineReport:
        return observer.report()

    @app.get("/api/tables/{table}", summary="One table")
    def api_table(table: str) -> TableReport:
        return table_or_404(table)

    @app.get("/api/batches", summary="The newest batches, newest first")
    def api_batches(
        table: str | None = None,
        closed_by: str | None = None,
        since_minutes: SinceMinutes = None,
        limit: Limit = 100,
    ) -> list[BatchRow]:
        return latest_batches(
            observer.meta,
            limit=limit,
            table=table,
            closed_by=closed_by,
            since=_since(since_minutes),
        )

    @app.get("/api/dead-letters", summary="The newest dead letters, newest first")
    def api_dead_letters(
        table: str | None = None,
        stage: str | None = None,
        q: Annotated[str | None, Query(description="A word in the reason or payload.")] = None,
        since_minutes: SinceMinutes = None,
        limit: Limit = 100,
    ) -> list[DeadLetterRow]:
        return dead_letters(
            observer.meta,
            limit=limit,
            table=table,
            stage=stage,
            text=q,
            since=_since(since_minutes),
        )

    @app.get("/api/throughput", summary="Changelog events per minute, last hour")
    def api_throughput() -> dict[str, Any]:
        report = observer.report()
        return {
            "minutes": len(report.events_per_minute),
            "until": report.generated_at,
            "total": report.events_per_minute,
            "tables": {t.table: t.events_per_minute for s in report.sources for t in s.tables},
        }

    @app.get("/api/lineage", summary="Lineage as nodes and edges")
    def api_lineage() -> Lineage:
        return lineage(observer.config, observer.meta)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(
            generate_latest(registry) if registry else b"", media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/healthz", include_in_schema=False)
    def health() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app

"""`tidemark serve --config FILE`: the web status page, its JSON API and Prometheus metrics."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from tidemark.commands._options import config_option, resolve_config


def build_server(
    config_path: Path | None, *, connect_url: str | None = None
) -> tuple[object, object]:
    """(the FastAPI app, its observer) for a config, with `/metrics` wired."""
    from tidemark.observe.metrics import status_registry
    from tidemark.observe.report import Observer
    from tidemark.web.app import create_app

    config = resolve_config(config_path)
    observer = Observer(config, connect_url=connect_url)
    return create_app(observer, registry=status_registry(observer)), observer


@click.command()
@config_option
@click.option("--port", default=8765, show_default=True, help="Port to listen on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (0.0.0.0 exposes the page to the network; it has no login).",
)
@click.option(
    "--connect-url",
    envvar="TIDEMARK_CONNECT_URL",
    default=None,
    help="Kafka Connect REST URL, to show connector and task state (distributed runtime).",
)
def serve(config_path: Path | None, port: int, host: str, connect_url: str | None) -> None:
    """Serve the status page: tables, freshness against SLAs, batches, dead letters, lineage.

    Pages at http://HOST:PORT/, a JSON API behind every panel under /api (what `tidemark
    status --json` prints is /api/status), Prometheus metrics at /metrics. Read-only on the
    lake and the sources; works while the pipeline runs, after it stopped, on an empty lake
    and on an S3 lake.
    """
    import uvicorn

    app, observer = build_server(config_path, connect_url=connect_url)
    click.echo(f"status page: http://{host}:{port}/  (Ctrl+C stops)", err=True)
    _stop_is_success()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")  # type: ignore[arg-type]
    finally:
        observer.close()  # type: ignore[attr-defined]


def _stop_is_success() -> None:
    """SIGINT/SIGTERM end `serve` normally (exit 0, tidemark/cli.py).

    uvicorn stops gracefully on them, then restores the handlers it found and raises the
    signal again, so that with Python's default handlers the process dies of it (exit 143 on
    SIGTERM). Handlers of our own are found, restored and called instead: they do nothing,
    the server has stopped already.
    """

    def stopped(signum: int, frame: FrameType | None) -> None:
        return None

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopped)

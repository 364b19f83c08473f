"""`tidemark simulate`: realistic OLTP changes into Postgres or SQL Server.

A thin layer over `simulator.Simulator`: parse options, handle SIGINT/SIGTERM (finish the
transaction in flight, then stop), show one live progress line on a terminal, print a summary
by table and operation.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from tidemark.simulator.errors import SimulatorConfigError
from tidemark.simulator.profiles import PROFILES
from tidemark.simulator.runner import Progress, Summary

_OPS = {"c": "insert", "u": "update", "d": "delete"}


def _parse_mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in ("insert", "update", "delete"):
            raise SimulatorConfigError(
                f"unknown operation `{name}` in --mix",
                hint="use e.g. --mix insert=50,update=35,delete=15",
            )
        try:
            mix[name] = float(value)
        except ValueError:
            raise SimulatorConfigError(
                f"bad weight `{value}` for `{name}` in --mix",
                hint="weights are numbers, e.g. insert=50",
            ) from None
    return mix


def _default_url() -> str:
    from tidemark.connectors.postgres.cluster import LocalCluster
    from tidemark.state import postgres_dir

    return LocalCluster(postgres_dir()).start()


def _progress_line(p: Progress) -> None:
    sys.stderr.write(
        f"\r{p.committed:>10,} changes  {p.rate:>8,.0f}/s  {p.transactions:,} tx  "
        f"{p.retries} retries  {p.reconnects} reconnects  {p.elapsed:6.1f}s\x1b[K"
    )
    sys.stderr.flush()


def _print_summary(summary: Summary, stopped: bool) -> None:
    click.echo(
        ("stopped: " if stopped else "")
        + f"{summary.total:,} committed row changes in {summary.transactions:,} transactions, "
        f"{summary.elapsed:.1f}s ({summary.rate:,.0f}/s), {summary.retries} retries"
    )
    width = max([len(t) for t in summary.counts] + [5])
    click.echo(f"  {'table':<{width}}  {'insert':>9}  {'update':>9}  {'delete':>9}")
    for table, ops in summary.counts.items():
        cells = "  ".join(f"{ops.get(op, 0):>9,}" for op in _OPS)
        click.echo(f"  {table:<{width}}  {cells}")


@click.command()
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="postgresql://user:pw@host:port/db or mssql://...; default: the local "
    "cluster (started if needed).",
)
@click.option(
    "--profile",
    default="customers",
    show_default=True,
    help=f"Schema and workload: {', '.join(PROFILES)}.",
)
@click.option("--setup", is_flag=True, help="Create the profile's schema first (idempotent).")
@click.option("--rate", type=float, help="Target committed row changes per second (all workers).")
@click.option("--max-changes", type=int, help="Stop after exactly N committed row changes.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--workers", type=int, default=1, show_default=True, help="Concurrent connections.")
@click.option("--seed", type=int, help="Same seed and one worker: the same operations.")
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    help="Append one JSON line per committed row change to FILE.",
)
@click.option(
    "--skew",
    type=click.Choice(["recent", "uniform"]),
    default="recent",
    show_default=True,
    help="Which rows updates and deletes hit.",
)
@click.option(
    "--mix",
    metavar="insert=W,update=W,delete=W",
    help="Operation weights (default insert=50,update=35,delete=15).",
)
@click.option(
    "--tx-size",
    type=int,
    default=10,
    show_default=True,
    help="Average row changes per transaction.",
)
def simulate(
    db_url: str | None,
    profile: str,
    setup: bool,
    rate: float | None,
    max_changes: int | None,
    duration: float | None,
    workers: int,
    seed: int | None,
    ledger: str | None,
    skew: str,
    mix: str | None,
    tx_size: int,
) -> None:
    """Generate realistic inserts, updates and deletes in multi-statement transactions.

    Ctrl+C (or SIGTERM) finishes the transactions in flight and prints a summary; a second
    Ctrl+C quits at once.
    """
    from tidemark.simulator.runner import Simulator

    options = dict(
        profile=profile,
        workers=workers,
        rate=rate,
        max_changes=max_changes,
        duration=duration,
        seed=seed,
        ledger=ledger,
        skew=skew,
        mix=_parse_mix(mix),
        tx_size=tx_size,
    )
    if db_url is None:
        # check every option before starting the local server, then point at it
        Simulator("postgresql://local@127.0.0.1/check", **options)  # type: ignore[arg-type]
        db_url = _default_url()
    sim = Simulator(db_url, **options)  # type: ignore[arg-type]
    if setup:
        sim.setup()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl+C: stop now, without waiting for commits
            raise KeyboardInterrupt
        if live:
            sys.stderr.write("\nstopping: finishing the transactions in flight...\n")
        stop.set()

    live = sys.stderr.isatty()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = sim.run(stop, on_progress=_progress_line if live else None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if live:
            sys.stderr.write("\n")
    _print_summary(summary, stop.is_set())

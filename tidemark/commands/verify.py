"""`tidemark verify`: compare the source with the lake (logic in tidemark/verify.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from tidemark.commands._options import config_option, resolve_config
from tidemark.verify import VerifyReport, verify_source


def _describe(report: VerifyReport) -> list[str]:
    batch = report.watermark_batch
    at = "" if batch is None else f", read at watermark batch {batch}"
    lines = [
        f"source snapshot at {report.source_position}; lake at {report.lake_position or '-'}"
        f"{at} (waited {report.waited_s:.1f} s)"
    ]
    for table in report.tables:
        mark = "ok  " if table.ok else "DIFF"
        lines.append(
            f"{mark} {table.table}: source {table.source_rows} rows, lake {table.lake_rows} rows"
        )
        for kind, count in table.differences.items():
            if count:
                keys = ", ".join(str(k[0] if len(k) == 1 else k) for k in table.examples[kind])
                lines.append(f"     {count} {kind} (first keys: {keys})")
        lines += [f"     invariant: {finding}" for finding in table.findings]
        lines += [f"     note: {note}" for note in table.notes]
    return lines


@click.command()
@config_option
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    help="Seconds to wait for the lake to reach the source's position.",
)
@click.option("--sample", default=5, show_default=True, help="Differing keys shown per kind.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(config_path: Path | None, timeout: float, sample: int, as_json: bool) -> None:
    """Compare every source table with the lake; exit 1 on any difference.

    Row counts and a per-row hash by key (first differing keys reported), plus forensic
    invariants: one open version per key, no overlapping intervals, as-of(now) equals live,
    and the changelog implies exactly the forensic versions. Works while the pipeline runs:
    the source is read in a snapshot at a known position and the lake is compared at it.
    """
    config = resolve_config(config_path)
    reports = [
        verify_source(config, source, timeout=timeout, sample=sample) for source in config.sources
    ]
    if as_json:
        click.echo(json.dumps([{**asdict(r), "ok": r.ok} for r in reports], default=str))
    else:
        for report in reports:
            for line in _describe(report):
                click.echo(line)
    ok = all(r.ok for r in reports)
    if not as_json:
        click.echo("verify: OK" if ok else "verify: DIFFERENCES FOUND", err=True)
    if not ok:
        raise click.exceptions.Exit(1)  # a difference found (tidemark/cli.py)

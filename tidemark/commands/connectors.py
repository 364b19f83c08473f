"""`tidemark connectors render|register|status|delete|secrets`: Debezium connectors on
Kafka Connect.

Configs come from the pipeline config (the same settings as the embedded engine); the
password is a Kafka Connect config-provider reference, never the value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from tidemark.connectors.kafka_connect import (
    SECRETS_FILE,
    KafkaConnect,
    SecretsProvider,
    register,
    render_connectors,
)

_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The pipeline config (YAML).",
)
_url_option = click.option(
    "--connect-url",
    envvar="TIDEMARK_CONNECT_URL",
    default="http://localhost:8083",
    show_default=True,
    help="Kafka Connect REST URL (env TIDEMARK_CONNECT_URL).",
)
_secrets_option = click.option(
    "--secrets",
    type=click.Choice(["file", "env"]),
    default="file",
    show_default=True,
    help="Config provider for passwords: `file` (${file:...}) or `env` (${env:...}).",
)
_secrets_file_option = click.option(
    "--secrets-file",
    default=SECRETS_FILE,
    show_default=True,
    help="Path of the properties file inside the Connect container (`file` provider).",
)


def rendered(
    config_path: str, secrets: SecretsProvider, secrets_file: str
) -> dict[str, dict[str, str]]:
    """Load the pipeline config and render every source's connector config."""
    from tidemark.config import load_config

    cfg: Any = load_config(config_path)
    kafka = getattr(cfg, "kafka", None)
    bootstrap = getattr(kafka, "bootstrap", None) or "localhost:9092"
    return render_connectors(
        cfg.sources,
        pipeline=cfg.pipeline,
        bootstrap=bootstrap,
        secrets=secrets,
        secrets_file=secrets_file,
        exclude_columns={source.name: cfg.excluded_columns(source) for source in cfg.sources},
    )


@click.group()
def connectors() -> None:
    """Debezium connectors on Kafka Connect, generated from the pipeline config."""


@connectors.command()
@_config_option
@_secrets_option
@_secrets_file_option
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write one `<connector>.json` per connector here instead of printing.",
)
def render(config_path: str, secrets: SecretsProvider, secrets_file: str, out: str | None) -> None:
    """Print (or write) the connector configs as JSON, exactly as `register` sends them."""
    configs = rendered(config_path, secrets, secrets_file)
    if out is None:
        click.echo(json.dumps(configs, indent=2))
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, config in configs.items():
        path = Path(out) / f"{name}.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        click.echo(f"wrote {path}")


@connectors.command("register")
@_config_option
@_url_option
@_secrets_option
@_secrets_file_option
def register_command(
    config_path: str, connect_url: str, secrets: SecretsProvider, secrets_file: str
) -> None:
    """Create or update every connector (idempotent: PUT /connectors/{name}/config)."""
    configs = rendered(config_path, secrets, secrets_file)
    for name, created in register(KafkaConnect(connect_url), configs).items():
        click.echo(f"{name}: {'created' if created else 'updated'}")


@connectors.command()
@_config_option
@_url_option
def status(config_path: str, connect_url: str) -> None:
    """Connector and task state, committed source offsets and the last error; exit 1
    unless every connector and every one of its tasks is RUNNING."""
    client = KafkaConnect(connect_url)
    ok = True
    for name in rendered(config_path, "file", SECRETS_FILE):
        state = client.status(name)
        if state is None:
            click.echo(f"{name}: not registered (run `tidemark connectors register`)")
            ok = False
            continue
        tasks = ", ".join(f"task {t.id} {t.state}" for t in state.tasks) or "no tasks"
        click.echo(f"{name}: {state.state} on {state.worker_id or '?'} ({tasks})")
        if state.last_error:
            click.echo(f"  last error: {state.last_error}")
        elif not state.tasks:
            click.echo("  no task runs: Connect has not started one (yet), or the connector failed")
        for entry in client.offsets(name):
            offset = ", ".join(f"{k}={v}" for k, v in sorted(entry.get("offset", {}).items()))
            click.echo(f"  offsets: {offset}")
        ok = ok and state.healthy and bool(state.tasks)
    if not ok:
        raise click.exceptions.Exit(1)  # found: not running


@connectors.command()
@_config_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the properties file (mounted into Connect at --secrets-file).",
)
def secrets(config_path: str, out: str) -> None:
    """Write the `file` config provider's secrets file (mode 600) from the environment.

    The passwords come from each source's dsn, as the config expands it from the
    environment (`dsn: ${SHOP_DSN}`); connectors rendered with `--secrets file` refer to
    `<source>.password` in this file. The file is created with mode 600 and never printed.
    """
    from tidemark.config import load_config
    from tidemark.connectors.kafka_connect import secrets_properties, sources_without_password

    cfg = load_config(config_path)
    missing = sources_without_password(cfg.sources)
    if missing:
        from tidemark.kernel.errors import UsageError

        raise UsageError(
            f"sources {missing} have no password in their dsn",
            hint="set it in the dsn, e.g. `dsn: postgresql://user:${SHOP_PASSWORD}@host/db`",
        )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets_properties(cfg.sources))
    path.chmod(0o600)
    click.echo(f"wrote {path} (mode 600): {', '.join(s.name for s in cfg.sources)}")


@connectors.command()
@_config_option
@_url_option
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Only this connector (repeatable); default: every connector of the config.",
)
def delete(config_path: str, connect_url: str, names: tuple[str, ...]) -> None:
    """Delete the pipeline's connectors (their offsets and slots stay; see docs)."""
    client = KafkaConnect(connect_url)
    for name in names or tuple(rendered(config_path, "file", SECRETS_FILE)):
        click.echo(f"{name}: {'deleted' if client.delete(name) else 'not registered'}")

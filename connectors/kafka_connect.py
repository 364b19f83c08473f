"""Debezium connectors on Kafka Connect: configs rendered from the pipeline config, and a
small client for the Kafka Connect REST API.

The connector settings come from the same functions the embedded engine uses
(`connectors/<kind>/settings.py: connector_settings`), so both runtimes capture alike. What
differs on Connect: engine-only keys (file offset store, file schema history) are dropped,
the SQL Server schema history goes to a Kafka topic, converters are set per connector (JSON
with schemas, as the decoder expects), and the password becomes a Kafka Connect
config-provider reference (`${file:...}` or `${env:...}`), resolved by the Connect worker,
so it is never stored in the connector config, in Connect's config topic, or in git.

REST endpoints used (Kafka Connect REST API): `PUT /connectors/{name}/config` (create or
update: idempotent), `GET /connectors/{name}/status`, `DELETE /connectors/{name}`,
`GET /connectors`.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote, unquote, urlsplit

from tidemark.connectors.errors import SourceConfigError, SourceError, SourceUnavailable
from tidemark.kernel.errors import TerminalError, TransientError

log = logging.getLogger(__name__)

SecretsProvider = Literal["file", "env"]
SECRETS_FILE = "/secrets/tidemark.properties"
"""Where the compose stack mounts the secrets file inside the Connect container."""

# Keys that only make sense inside the embedded engine (its own offset and history files).
_ENGINE_ONLY_PREFIXES = ("offset.storage", "offset.flush", "schema.history.internal.file")
_ENGINE_ONLY_KEYS = {"schema.history.internal", "name"}
_JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


class SourceSpec(Protocol):
    """What rendering needs from one `sources[]` entry of the pipeline config."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def dsn(self) -> str: ...
    @property
    def tables(self) -> Sequence[str]: ...


def connector_name(pipeline: str, source: str) -> str:
    """Connector name on Connect: `<pipeline>-<source>` (unique per pipeline and source)."""
    return f"{pipeline}-{source}"


def _ident(*parts: str) -> str:
    """A Postgres identifier (slot, publication): lowercase letters, digits, underscores."""
    return re.sub(r"[^a-z0-9_]", "_", "_".join(parts).lower())[:63]


def connect_slot(pipeline: str, source: str) -> str:
    """The replication slot (and publication) of a Postgres source's Connect connector,
    apart from the embedded engine's, so the two runtimes never share one."""
    return _ident("tidemark", pipeline, source, "connect")


def password_reference(
    source: str, provider: SecretsProvider, *, secrets_file: str = SECRETS_FILE
) -> str:
    """The config-provider reference that stands for `source`'s password.

    `file`: key `<source>.password` in a Java properties file mounted into Connect.
    `env`: variable `TIDEMARK_<SOURCE>_PASSWORD` in the Connect worker's environment.
    """
    if provider == "file":
        return f"${{file:{secrets_file}:{source}.password}}"
    return f"${{env:{password_env_var(source)}}}"


def password_env_var(source: str) -> str:
    """`TIDEMARK_<SOURCE>_PASSWORD`, the env var the `env` provider reads."""
    return "TIDEMARK_" + re.sub(r"[^A-Z0-9]", "_", source.upper()) + "_PASSWORD"


def _password_of(dsn: str) -> str | None:
    password = urlsplit(dsn).password
    return unquote(password) if password else None


def render_connector(
    source: SourceSpec,
    *,
    pipeline: str,
    bootstrap: str,
    secrets: SecretsProvider = "file",
    secrets_file: str = SECRETS_FILE,
    heartbeat_ms: int = 10_000,
    partitions: int = 4,
    exclude_columns: str | None = None,
) -> dict[str, str]:
    """The Kafka Connect config of one source's Debezium connector.

    `exclude_columns` is Debezium's `column.exclude.list` (classified columns that must
    never be captured).

    Raises:
        SourceConfigError: unknown source kind, or the password would leak into the config.
    """
    name = connector_name(pipeline, source.name)
    tables = list(source.tables)
    if source.kind == "postgres":
        from tidemark.connectors.postgres.settings import connector_settings as pg_settings

        ident = connect_slot(pipeline, source.name)
        settings = pg_settings(
            name=source.name,
            dsn=source.dsn,
            tables=tables,
            slot=ident,
            publication=ident,
            heartbeat_ms=heartbeat_ms,
        )
    elif source.kind == "sqlserver":
        from tidemark.connectors.sqlserver.settings import connector_settings as mssql_settings

        settings = mssql_settings(
            name=source.name, dsn=source.dsn, tables=tables, heartbeat_ms=heartbeat_ms
        )
    else:
        raise SourceConfigError(
            f"source `{source.name}` has unknown kind `{source.kind}`",
            hint="use `postgres` or `sqlserver`",
        )
    config = {
        k: str(v)
        for k, v in settings.items()
        if k not in _ENGINE_ONLY_KEYS and not k.startswith(_ENGINE_ONLY_PREFIXES)
    }
    if source.kind == "postgres":
        # The decoder's exactness settings (decimals precise, intervals as ISO strings...).
        from tidemark.connectors.decode.settings import TYPE_SETTINGS

        for key, value in TYPE_SETTINGS.items():
            config.setdefault(key, value)
    config.update(
        {
            "topic.prefix": source.name,
            "tasks.max": "1",
            # Topics Connect creates get several partitions so workers can scale out; Debezium
            # keys records by primary key, so one key always lands in one partition (order).
            "topic.creation.default.partitions": str(partitions),
            "topic.creation.default.replication.factor": "-1",
            "key.converter": _JSON_CONVERTER,
            "key.converter.schemas.enable": "true",
            "value.converter": _JSON_CONVERTER,
            "value.converter.schemas.enable": "true",
            "value.converter.replace.null.with.default": "false",
            "key.converter.replace.null.with.default": "false",
            "provide.transaction.metadata": "true",
            "database.password": password_reference(
                source.name, secrets, secrets_file=secrets_file
            ),
        }
    )
    if exclude_columns:
        config["column.exclude.list"] = exclude_columns
    if source.kind == "sqlserver":
        config["schema.history.internal.kafka.bootstrap.servers"] = bootstrap
        config["schema.history.internal.kafka.topic"] = (
            f"_tidemark.{pipeline}.{source.name}.history"
        )
    password = _password_of(source.dsn)
    leaks = (password, f":{password}@", f"password={password}")
    if password and any(v == password or any(x in v for x in leaks[1:]) for v in config.values()):
        raise SourceConfigError(
            f"the rendered config of connector `{name}` would contain the password",
            hint="report this as a bug; the password must stay a config-provider reference",
        )
    return dict(sorted(config.items()))


def render_connectors(
    sources: Iterable[SourceSpec],
    *,
    pipeline: str,
    bootstrap: str,
    secrets: SecretsProvider = "file",
    secrets_file: str = SECRETS_FILE,
    exclude_columns: Mapping[str, str | None] | None = None,
    partitions: int = 4,
) -> dict[str, dict[str, str]]:
    """Every source's connector config, keyed by connector name (`exclude_columns`: per
    source name, Debezium's `column.exclude.list`)."""
    return {
        connector_name(pipeline, s.name): render_connector(
            s,
            pipeline=pipeline,
            bootstrap=bootstrap,
            secrets=secrets,
            secrets_file=secrets_file,
            exclude_columns=(exclude_columns or {}).get(s.name),
            partitions=partitions,
        )
        for s in sources
    }


def sources_without_password(sources: Iterable[SourceSpec]) -> list[str]:
    """Names of the sources whose dsn holds no password."""
    return [s.name for s in sources if not _password_of(s.dsn)]


def secrets_properties(sources: Iterable[SourceSpec]) -> str:
    """The `file` provider's properties file for these sources (keep it out of git)."""
    lines = []
    for s in sources:
        password = _password_of(s.dsn) or ""
        escaped = password.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"{s.name}.password={escaped}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TaskStatus:
    id: int
    state: str
    worker_id: str | None
    trace: str | None


@dataclass(frozen=True)
class ConnectorStatus:
    """One connector's state as Connect reports it (`GET /connectors/{name}/status`)."""

    name: str
    state: str
    worker_id: str | None
    tasks: tuple[TaskStatus, ...]
    trace: str | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "RUNNING" and all(t.state == "RUNNING" for t in self.tasks)

    @property
    def last_error(self) -> str | None:
        """The first line of the connector's or a failed task's trace, if any."""
        for trace in [self.trace, *(t.trace for t in self.tasks)]:
            if trace:
                return trace.strip().splitlines()[0]
        return None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ConnectorStatus:
        conn = body.get("connector", {})
        return cls(
            name=body["name"],
            state=conn.get("state", "UNKNOWN"),
            worker_id=conn.get("worker_id"),
            trace=conn.get("trace"),
            tasks=tuple(
                TaskStatus(
                    int(t["id"]), t.get("state", "UNKNOWN"), t.get("worker_id"), t.get("trace")
                )
                for t in body.get("tasks", [])
            ),
        )


class ConnectError(SourceError):
    """Kafka Connect answered with an error."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class ConnectBusy(ConnectError, TransientError):
    """Connect is rebalancing (409) or failing (5xx); retrying later may work."""


class ConnectRejected(ConnectError, TerminalError):
    """Connect refused a connector for good (a 4xx, or a 5xx that names a config problem
    such as a missing secrets file): retrying cannot help, the hint says what to fix."""

    exit_code = 2


# Answers of Kafka Connect that look like server errors but are configuration mistakes.
_PERMANENT = (
    (
        re.compile(r"Could not read properties from file (\S+)"),
        "the secrets file `{0}` is missing or unreadable in the Connect worker: write it with "
        "`tidemark connectors secrets --config FILE --out PATH` (mode 600) and mount it "
        "there, or register with `--secrets env`",
    ),
    (
        re.compile(r"password authentication failed for user \\?\"?([^\s\\\"]+)"),
        "the source refused the password Connect resolved for user `{0}`: with `--secrets env` "
        "set TIDEMARK_<SOURCE>_PASSWORD in the Connect worker's environment (an unset "
        "`${{env:...}}` is not an error in Connect), with `--secrets file` check the file",
    ),
    (
        re.compile(
            r"Failed to find any class that implements Connector and which name matches "
            r"(\S+?),"
        ),
        "this Connect cluster has no `{0}` plugin: install Debezium's connector (the same "
        "version as `tidemark`'s embedded engine, see docs/distributed.md)",
    ),
    (
        re.compile(r"The '([^']+)' value is invalid"),
        "fix `{0}`: see what `tidemark connectors render` sends and the source's config",
    ),
)


def classify(status: int, message: str) -> tuple[bool, str | None]:
    """(permanent, hint) for an error answer of Kafka Connect."""
    for pattern, hint in _PERMANENT:
        match = pattern.search(message)
        if match:
            return True, hint.format(*match.groups())
    if status == 409 or status >= 500:
        return False, None
    return True, None


class KafkaConnect:
    """A client for the few Kafka Connect REST endpoints Tidemark uses.

    Args:
        url: the REST base URL, e.g. `http://connect:8083`.
        timeout: seconds per request (Connect can take tens of seconds while it rebalances).
        retries: attempts for 409 (rebalance in progress), transient 5xx answers and
            timeouts.
    """

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 5) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries

    def _call(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(1, self.retries + 1):
            req = urllib.request.Request(
                self.url + path,
                data=data,
                method=method,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    return resp.status, json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                try:
                    message = json.loads(raw).get("message", "") if raw else ""
                except ValueError:
                    message = raw.decode(errors="replace")[:200]
                permanent, hint = classify(exc.code, message)
                if exc.code >= 500 and permanent:
                    raise ConnectRejected(
                        f"Kafka Connect refused {method} {path}: {_first_line(message)}",
                        status=exc.code,
                        hint=hint,
                    ) from exc
                if exc.code == 409 or exc.code >= 500:
                    if attempt < self.retries:
                        log.info("connect %s %s answered %s, retrying", method, path, exc.code)
                        time.sleep(min(0.2 * 2**attempt, 5))
                        continue
                    raise ConnectBusy(
                        f"Kafka Connect answered `{exc.code}` to {method} {path}: "
                        f"{_first_line(message)}",
                        status=exc.code,
                        hint="Connect is rebalancing or failing: retry when it is stable",
                    ) from exc
                return exc.code, {"error_code": exc.code, "message": message}
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError) and attempt < self.retries:
                    # Connect answers slowly while it rebalances; every call here is
                    # idempotent (GET, PUT of a whole config, DELETE), so asking again is safe.
                    log.info("connect %s %s timed out, retrying", method, path)
                    continue
                raise SourceUnavailable(
                    f"cannot reach Kafka Connect at `{self.url}`: {reason}",
                    hint="is it running? `tidemark up --distributed` starts one, "
                    "`docker compose up connect` another; or pass --connect-url",
                ) from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _path(name: str) -> str:
        return "/connectors/" + quote(name, safe="")

    def put_config(self, name: str, config: Mapping[str, str]) -> bool:
        """Create or update a connector (idempotent). True when it was created.

        Raises:
            ConnectError: Connect rejected the config (the message says why).
        """
        status, body = self._call("PUT", self._path(name) + "/config", dict(config))
        if status not in (200, 201):
            message = str(body.get("message", body))
            _, hint = classify(status, message)
            raise ConnectRejected(
                f"Kafka Connect rejected connector `{name}`: {_first_line(message)}",
                status=status,
                hint=hint or "fix the source settings in the pipeline config",
            )
        return status == 201

    def get_config(self, name: str) -> dict[str, str] | None:
        status, body = self._call("GET", self._path(name) + "/config")
        return None if status == 404 else dict(body)

    def status(self, name: str) -> ConnectorStatus | None:
        """The connector's and its tasks' state, or None when it does not exist."""
        code, body = self._call("GET", self._path(name) + "/status")
        if code == 404:
            return None
        if code != 200:
            raise ConnectError(f"status of `{name}` failed: {body.get('message')}", status=code)
        return ConnectorStatus.from_json(body)

    def stop(self, name: str) -> None:
        """Stop the connector and its tasks, keeping its config and offsets (Connect 3.5+)."""
        code, body = self._call("PUT", self._path(name) + "/stop")
        if code not in (200, 202, 204):
            raise ConnectError(f"stop of `{name}` failed: {body.get('message')}", status=code)

    def resume(self, name: str) -> None:
        """Run a stopped or paused connector again."""
        code, body = self._call("PUT", self._path(name) + "/resume")
        if code not in (200, 202, 204):
            raise ConnectError(f"resume of `{name}` failed: {body.get('message')}", status=code)

    def delete(self, name: str) -> bool:
        """Delete a connector; False when it did not exist."""
        code, body = self._call("DELETE", self._path(name))
        if code == 404:
            return False
        if code not in (200, 204):
            raise ConnectError(f"delete of `{name}` failed: {body.get('message')}", status=code)
        return True

    def list(self) -> list[str]:
        _, body = self._call("GET", "/connectors")
        return sorted(body)

    def configs(self) -> dict[str, dict[str, str]]:
        """Every registered connector's config (`GET /connectors?expand=info`)."""
        _, body = self._call("GET", "/connectors?expand=info")
        return {
            name: dict(entry.get("info", {}).get("config", {}))
            for name, entry in (body or {}).items()
        }

    def offsets(self, name: str) -> builtins.list[dict[str, Any]]:
        """The connector's committed source offsets (Connect 3.5+; [] when it has none).

        Each entry is `{"partition": {...}, "offset": {...}}`: for Debezium Postgres the
        partition is `{"server": <topic prefix>}` and the offset holds `lsn`, `txId`, ...
        """
        code, body = self._call("GET", self._path(name) + "/offsets")
        if code == 404:
            return []
        if code != 200:
            raise ConnectError(f"offsets of `{name}` failed: {body.get('message')}", status=code)
        return list(body.get("offsets", []))

    def set_log_level(self, logger: str, level: str) -> bool:
        """Set a logger's level on every worker of the cluster (Connect 3.7+); False when
        this Connect has no such endpoint."""
        code, _ = self._call(
            "PUT", f"/admin/loggers/{quote(logger, safe='')}?scope=cluster", {"level": level}
        )
        return code in (200, 204)


def _first_line(message: str) -> str:
    """Connect's messages run over several lines (and list every plugin); keep the gist."""
    lines = [line for line in message.splitlines() if line.strip()]
    gist = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return gist if len(gist) <= 300 else gist[:297] + "..."


QUIET_LOGGERS = {
    # "Failed to add measurement event to queue, queue is full": hundreds of WARN lines a
    # minute under load, from a metrics queue that only drops a sample.
    "io.debezium.metrics.stats.MeasurementCollector": "ERROR",
}


def register(client: KafkaConnect, configs: Mapping[str, Mapping[str, str]]) -> dict[str, bool]:
    """PUT every config (create or update), then quiet Debezium's noisy loggers on the
    cluster; returns name -> created.

    Raises:
        ConnectRejected: another connector on the cluster already writes the topics one of
            these would write (two pipelines with a source of the same name).
    """
    taken = {
        other.get("topic.prefix"): name
        for name, other in client.configs().items()
        if name not in configs and other.get("topic.prefix")
    }
    for name, cfg in configs.items():
        owner = taken.get(cfg.get("topic.prefix"))
        if owner is not None:
            raise ConnectRejected(
                f"connector `{owner}` already writes the topics `{cfg['topic.prefix']}.*` "
                f"that `{name}` would write",
                status=409,
                hint="two pipelines must not share a source name on one Kafka cluster: "
                "rename this pipeline's source (`sources[].name`)",
            )
    created = {name: client.put_config(name, cfg) for name, cfg in configs.items()}
    for logger, level in QUIET_LOGGERS.items():
        try:
            client.set_log_level(logger, level)
        except ConnectError as exc:  # an older Connect: its log stays as it was
            log.info("could not set %s to %s: %s", logger, level, exc)
    return created

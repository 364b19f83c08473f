"""The pipeline configuration (DESIGN §3.5): one YAML file, parsed once, frozen.

`${VAR}` expands from the environment, which is how secrets stay out of files. Every
error names the dotted key path, the bad value (passwords masked) and the fix. Code below
the wiring layer receives only the few typed values it uses, never this whole object.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tidemark.config_types import Duration
from tidemark.config_types import parse_duration as parse_duration  # re-exported
from tidemark.errors import ConfigError
from tidemark.kernel.columns import Layer
from tidemark.kernel.names import config_name, lake_name, split_table
from tidemark.kernel.secrets import mask
from tidemark.loads_config import CaptureConfig, RefreshConfig, SnapshotConfig, resolve_snapshot

_TAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a classification tag names a policy
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
WriteMode = Literal["copy_on_write", "merge_on_read"]
_SCHEMES = {"postgres": ("postgresql", "postgres"), "sqlserver": ("mssql", "sqlserver")}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceConfig(_Frozen):
    """One producer database and the tables captured from it."""

    name: str = Field(description="Short name; prefixes topics and lake tables.")
    kind: Literal["postgres", "sqlserver"] = Field(description="The source database kind.")
    dsn: str = Field(description="postgresql://user:pass@host:port/db or mssql://...; use ${VAR}.")
    tables: tuple[str, ...] = Field(
        min_length=1,
        description="Captured tables as schema.table (quote names with spaces or dots).",
    )
    keys: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Key columns per table, overriding the primary key."
    )
    ddl_capture: bool = Field(
        default=True,
        description="Postgres: require Tidemark's DDL capture (`tidemark setup`) so schema "
        "changes reach the lake exactly; false runs without it (docs/schema-changes.md).",
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lower-case letters, digits and _ (it names topics, slots)")
        return value

    @field_validator("tables")
    @classmethod
    def _tables_are_qualified(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = []
        for index, table in enumerate(value):
            try:
                names.append(config_name(*split_table(table)))
            except ValueError as exc:
                raise ValueError(
                    f"[{index}] `{table}` must be schema.table ({exc}), e.g. public.customers;"
                    ' quote names with spaces or dots: "Sales"."Order Items"'
                ) from None
        if len(set(names)) != len(names):
            raise ValueError("lists a table twice")
        return tuple(names)

    @field_validator("keys")
    @classmethod
    def _keys_name_tables(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        keys = {}
        for table, columns in value.items():
            try:
                keys[config_name(*split_table(table))] = columns
            except ValueError as exc:
                raise ValueError(f"`{table}`: {exc}") from None
        return keys

    @model_validator(mode="after")
    def _dsn_matches_kind(self) -> SourceConfig:
        scheme = urlsplit(self.dsn).scheme
        allowed = _SCHEMES[self.kind]
        if scheme not in allowed:
            raise ValueError(
                f"dsn scheme `{scheme or '(none)'}` does not fit kind `{self.kind}`: "
                f"use {allowed[0]}://user:pass@host:port/db"
            )
        unknown = set(self.keys) - set(self.tables)
        if unknown:
            raise ValueError(f"keys names tables that are not captured: {sorted(unknown)}")
        return self

    def lake_table(self, table: str) -> str:
        """The lake table name `<source>.<schema>.<table>` (the names unquoted)."""
        return lake_name(self.name, *split_table(table))


class BatchingConfig(_Frozen):
    """When a batch closes (it never splits a source transaction)."""

    max_events: int = Field(default=50_000, gt=0, description="Close at this many events.")
    max_latency_ms: int = Field(
        default=500,
        gt=0,
        description="Close this long after the first (500: p99 commit-to-queryable under 1 s).",
    )


class KafkaConfig(_Frozen):
    """The distributed runtime's broker settings."""

    bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port].")
    group: str | None = Field(
        default=None, description="Consumer group; default tidemark-<pipeline>."
    )
    live_topic_prefix: str | None = Field(
        default=None, description="If set, publish compacted <prefix>.live.<table> topics."
    )
    epoch: int = Field(
        default=0,
        ge=0,
        description="Raise by one when the source topics were created anew (a new broker, "
        "topics deleted): workers then read them from offset 0 (docs/distributed.md).",
    )


class DebeziumConfig(_Frozen):
    """Embedded engine settings."""

    jvm_heap: Annotated[str, Field(pattern=r"^\d+[mMgG]$")] = Field(
        default="256m", description="JVM maximum heap (-Xmx), e.g. 256m or 1g."
    )
    heartbeat_ms: int = Field(default=10_000, gt=0, description="Heartbeat interval.")
    properties: dict[str, str] = Field(
        default_factory=dict, description="Extra Debezium properties, passed through as they are."
    )


class SlaConfig(_Frozen):
    """Freshness targets of one lake table's layers, in seconds (None: no target).

    Freshness is how far a layer trails its source (docs/observability.md): `tidemark status
    --check` exits 1 when a layer's freshness is above its target, and the status page
    shows it red (amber above half of it).
    """

    live: Duration | None = Field(default=60.0, description="Live layer target (default 60s).")
    forensic: Duration | None = Field(
        default=600.0, description="Forensic layer target (default 10m)."
    )
    changelog: Duration | None = Field(default=None, description="Changelog target (none).")

    def for_layer(self, layer: Layer) -> float | None:
        """The target of one layer, None when it has none."""
        target: float | None = getattr(self, layer.value)
        return target


_REFRESH = re.compile(r"^(batch|[1-9][0-9]*[smh])$")


class TagPolicy(_Frozen):
    """What a classification tag does on the consumer side and in the raw layers."""

    mask: Literal["hash", "drop"] = Field(
        default="hash",
        description="In views and gold models: hashed with the lake's key, or left out.",
    )
    raw: Literal["keep", "drop"] = Field(
        default="keep", description="drop: never captured, so changelog/live/forensic lack it."
    )


class ModelsConfig(_Frozen):
    """Gold models: SQL files (DuckDB dialect) materialised into `<lake>/gold/<name>`."""

    path: str = Field(description="Folder of `<name>.sql` files; relative to the config file.")
    refresh: dict[str, str] = Field(
        default_factory=lambda: {"*": "batch"},
        description="Per model or `*`: `batch` (after each batch touching its inputs) or an "
        "interval such as 30s, 5m, 1h.",
    )

    @field_validator("refresh")
    @classmethod
    def _refresh_is_known(cls, value: dict[str, str]) -> dict[str, str]:
        for model, every in value.items():
            if not _REFRESH.match(str(every)):
                raise ValueError(f"[{model}] `{every}` must be `batch` or an interval like 5m")
        return value

    def refresh_seconds(self, model: str) -> float | None:
        """None for `batch`, else the interval in seconds."""
        every = self.refresh.get(model) or self.refresh.get("*") or "batch"
        if every == "batch":
            return None
        return float(every[:-1]) * {"s": 1, "m": 60, "h": 3600}[every[-1]]


class PipelineConfig(_Frozen):
    """A whole pipeline: sources, lake, layers, batching."""

    pipeline: str = Field(description="Pipeline name; names the slot, publication and app id.")
    lake: str = Field(default="./lake", description="Lake root: a local path or s3://bucket/path.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="delta-rs storage options (e.g. AWS_ENDPOINT_URL)."
    )
    lake_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory for recently written live and forensic buckets, shared by all tables.",
    )
    sources: tuple[SourceConfig, ...] = Field(min_length=1, description="Producer databases.")
    layers: dict[str, tuple[Layer, ...]] = Field(
        default_factory=dict,
        description="Layers per lake table (or `*`); default: changelog, live and forensic.",
    )
    write_mode: dict[str, WriteMode] = Field(
        default_factory=dict,
        description="Live and forensic write mode per lake table (or `*`); default "
        "copy_on_write. merge_on_read writes deletion vectors: see docs/sinks.md.",
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Batching.")
    sla: dict[str, SlaConfig] = Field(
        default_factory=dict,
        description="Freshness targets per lake table (or `*`); default live 60s, forensic 10m.",
    )
    kafka: KafkaConfig | None = Field(default=None, description="Distributed runtime only.")
    debezium: DebeziumConfig = Field(default_factory=DebeziumConfig, description="Engine.")
    models: ModelsConfig | None = Field(default=None, description="Gold models; none by default.")
    classify: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Column tags per table (schema.table or source.schema.table): {email: pii}.",
    )
    tags: dict[str, TagPolicy] = Field(
        default_factory=dict, description="Per tag: mask (hash|drop) and raw (keep|drop)."
    )
    snapshot: dict[str, SnapshotConfig] = Field(
        default_factory=dict,
        description="How tables are snapshotted when armed, per lake table, source or `*`.",
    )
    refresh: dict[str, RefreshConfig] = Field(
        default_factory=dict,
        description="Reference tables reloaded whole on a schedule (`full` or {every: 1h}).",
    )
    capture: dict[str, CaptureConfig] = Field(
        default_factory=dict,
        description="Per lake table: log (default) or {mode: watermark, column: ...}.",
    )

    @field_validator("refresh", "capture", mode="before")
    @classmethod
    def _shorthands(cls, value: Any) -> Any:
        if isinstance(value, dict):
            words = {"full": {"mode": "full"}, "log": {"mode": "log"}}
            return {k: words.get(v, v) if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("pipeline")
    @classmethod
    def _pipeline_is_identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lower-case letters, digits and _ (it names the slot)")
        return value

    @model_validator(mode="after")
    def _names_are_consistent(self) -> PipelineConfig:
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"two sources share a name: {names}")
        known = {table for source in self.sources for table in self.lake_tables_of(source)}
        for key in ("layers", "sla", "write_mode", "refresh", "capture"):
            unknown = set(getattr(self, key)) - known - {"*"}
            if unknown:
                raise ValueError(
                    f"{key} names unknown tables {sorted(unknown)}; known: {sorted(known)}"
                )
        unknown = set(self.snapshot) - known - {"*"} - set(names)
        if unknown:
            raise ValueError(
                f"snapshot names unknown tables or sources {sorted(unknown)}; known: "
                f"{sorted(known | set(names))}"
            )
        both = set(self.refresh) & {t for t, c in self.capture.items() if c.mode == "watermark"}
        if both:
            raise ValueError(f"{sorted(both)}: choose refresh or watermark capture, not both")
        captured = known | {t for source in self.sources for t in source.tables}
        for table, columns in self.classify.items():
            if table not in captured:
                raise ValueError(f"classify names `{table}`, which is not captured")
            for column, tag in columns.items():
                if not _TAG.match(str(tag)):
                    raise ValueError(f"classify.{table}.{column}: tag `{tag}` is not a name")
        return self

    def classified(self, lake_table: str) -> dict[str, tuple[str, TagPolicy]]:
        """Column -> (tag, policy) of a lake table (`source.schema.table`)."""
        short = lake_table.split(".", 1)[1] if lake_table.count(".") == 2 else lake_table
        columns = {**self.classify.get(short, {}), **self.classify.get(lake_table, {})}
        return {c: (tag, self.tags.get(tag) or TagPolicy()) for c, tag in columns.items()}

    @staticmethod
    def lake_tables_of(source: SourceConfig) -> list[str]:
        return [source.lake_table(table) for table in source.tables]

    def layers_for(self, lake_table: str) -> frozenset[Layer]:
        """The layers a lake table is written to."""
        chosen = self.layers.get(lake_table) or self.layers.get("*") or tuple(Layer)
        return frozenset(chosen)

    def sla_for(self, lake_table: str) -> SlaConfig:
        """The freshness targets of a lake table: its own entry's keys, then `*`'s, then the
        defaults."""
        base = self.sla.get("*") or SlaConfig()
        own = self.sla.get(lake_table)
        if own is None:
            return base
        return base.model_copy(update={key: getattr(own, key) for key in own.model_fields_set})

    def snapshot_for(self, source: SourceConfig, lake_table: str) -> SnapshotConfig:
        """How `lake_table` is snapshotted (its entry, its source's, `*`'s, the defaults)."""
        return resolve_snapshot(
            self.snapshot, source=source.name, table=lake_table, kind=source.kind
        )

    def refresh_for(self, lake_table: str) -> RefreshConfig | None:
        """The reload schedule of a reference table (None: the table is streamed)."""
        return self.refresh.get(lake_table) or self.refresh.get("*")

    def capture_for(self, lake_table: str) -> CaptureConfig:
        """How `lake_table`'s changes are captured (the log unless configured)."""
        return self.capture.get(lake_table) or self.capture.get("*") or CaptureConfig()

    def streamed_tables(self, source: SourceConfig) -> tuple[str, ...]:
        """The tables (config names) whose changes Debezium captures: all but reference
        tables and watermark-captured ones."""
        return tuple(
            t
            for t in source.tables
            if self.refresh_for(source.lake_table(t)) is None
            and self.capture_for(source.lake_table(t)).mode == "log"
        )

    def excluded_columns(self, source: SourceConfig) -> str | None:
        """Debezium's `column.exclude.list` for a source: the columns whose tag asks
        `raw: drop` (never captured, so no layer of the lake holds them), or None."""
        names = [
            re.escape(f"{table}.{column}")
            for table in source.tables
            for column, (_, policy) in self.classified(source.lake_table(table)).items()
            if policy.raw == "drop"
        ]
        return ",".join(names) or None

    def write_mode_for(self, lake_table: str) -> WriteMode:
        """How a lake table's live and forensic layers are written."""
        return self.write_mode.get(lake_table) or self.write_mode.get("*") or "copy_on_write"

    @property
    def app_id(self) -> str:
        """The Delta transaction app id prefix for this pipeline."""
        return f"tidemark:{self.pipeline}"

    @property
    def kafka_epoch(self) -> int:
        """The distributed runtime's topic epoch (0 without a `kafka:` section)."""
        return self.kafka.epoch if self.kafka is not None else 0


_DSN_PATH = re.compile(r"^sources\[\d+\]\.dsn$")
UNSET = "unset"
"""What an unset variable in a source dsn becomes when the dsn is not needed (workers)."""


def expand_env(
    value: Any, path: str = "", env: Mapping[str, str] | None = None, *, need_dsn: bool = True
) -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string, recursively.

    With `need_dsn` False (a distributed worker never connects to a source), an unset
    variable inside `sources[].dsn` becomes `unset` instead of an error.

    Raises:
        ConfigError: a variable is not set and has no default.
    """
    env = os.environ if env is None else env
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if not need_dsn and _DSN_PATH.match(path):
                return UNSET
            raise ConfigError(
                path, f"environment variable `{name}` is not set", hint=f"export {name}=..."
            )

        return _ENV.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else str(k), env, need_dsn=need_dsn)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", env, need_dsn=need_dsn) for i, v in enumerate(value)]
    return value


def _placeholder_dsns(data: dict[str, Any]) -> dict[str, Any]:
    """A source dsn that was only an unset variable gets a placeholder of its kind's scheme
    (validation then passes; nothing connects with it)."""
    sources = data.get("sources")
    if not isinstance(sources, list):
        return data
    fixed = []
    for source in sources:
        if isinstance(source, dict) and source.get("dsn") == UNSET:
            scheme = _SCHEMES.get(str(source.get("kind")), ("postgresql",))[0]
            source = {**source, "dsn": f"{scheme}://{UNSET}@{UNSET}/{UNSET}"}
        fixed.append(source)
    return {**data, "sources": fixed}


def _key_path(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


def _lookup(data: Any, location: tuple[int | str, ...]) -> Any:
    for item in location:
        try:
            data = data[item]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def parse_config(
    data: Any, *, env: Mapping[str, str] | None = None, need_dsn: bool = True
) -> PipelineConfig:
    """Validate an already-loaded YAML document (`need_dsn`: see `expand_env`).

    Raises:
        ConfigError: naming the first bad key path, its value, and the fix.
    """
    if not isinstance(data, dict):
        raise ConfigError("", "the file must hold a mapping (pipeline:, lake:, sources:)")
    try:
        expanded = expand_env(data, env=env, need_dsn=need_dsn)
        if not need_dsn:
            expanded = _placeholder_dsns(expanded)
        return PipelineConfig.model_validate(expanded)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = tuple(error["loc"])
        key = _key_path(location) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            raise ConfigError(key, "is required", hint="add it; see config/pipeline.yaml") from None
        if error["type"] == "extra_forbidden":
            raise ConfigError(
                key, "is not a known key", hint="check the spelling; see config/pipeline.yaml"
            ) from None
        value = _lookup(data, location)
        shown = "" if isinstance(value, dict | list) or value is None else f" (got `{value}`)"
        raise ConfigError(key, mask(f"{message}{shown}")) from None


def load_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, need_dsn: bool = True
) -> PipelineConfig:
    """Read, expand and validate a pipeline YAML file (`need_dsn`: see `expand_env`)."""
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(
            "", f"config file `{file}` not found", hint="pass --config FILE"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("", f"`{file}` is not valid YAML{where}") from None
    config = parse_config(data, env=env, need_dsn=need_dsn)
    if config.models is not None and not Path(config.models.path).is_absolute():
        folder = str((file.parent / config.models.path).resolve())
        config = config.model_copy(
            update={"models": config.models.model_copy(update={"path": folder})}
        )
    return config

"""Topic names of the distributed runtime, defined once (DESIGN §3.5).

Debezium names: `<source>.<schema>.<table>` (Postgres), `<source>.<database>.<schema>.<table>`
(SQL Server), `<source>.transaction` (transaction BEGIN/END markers). Lake tables are always
`<source>.<schema>.<table>`: the SQL Server database is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from tidemark.connectors.kafka_connect import SourceSpec
from tidemark.kernel.names import lake_name, split_table, topic_part

SourceKind = Literal["postgres", "sqlserver"]


class SourceLike(SourceSpec, Protocol):
    """A `sources[]` entry as the worker needs it: what rendering needs, plus key overrides."""

    @property
    def keys(self) -> Mapping[str, tuple[str, ...]]: ...


@dataclass(frozen=True)
class SourceTopic:
    """One captured table as the worker sees it.

    Attributes:
        topic: the Kafka topic Debezium writes.
        table: the lake table name.
        source: the source name (Debezium's topic prefix).
        kind: the source kind (for the decoder).
        key_columns: configured key columns, or None to take them from the record keys.
    """

    topic: str
    table: str
    source: str
    kind: SourceKind
    key_columns: tuple[str, ...] | None


def lane_stream(app_id: str, topic: str, partition: int, *, epoch: int = 0) -> str:
    """The replay-guard stream (Delta txn app id prefix) of one partition of a topic.

    Its txn versions are Kafka offsets, which mean nothing once the topic is created anew (a
    new broker, a deleted topic): `kafka.epoch` then gives every partition a new stream,
    read from offset 0. Epoch 0 keeps the names lakes have always had.
    """
    if epoch:
        return f"{app_id}:{topic}~{epoch}:{partition}"
    return f"{app_id}:{topic}:{partition}"


def topic_stream(app_id: str, topic: str, *, epoch: int = 0) -> str:
    """The app id of the lake a worker's lanes of `topic` share."""
    return f"{app_id}:{topic}~{epoch}" if epoch else f"{app_id}:{topic}"


def transaction_topic(source: str) -> str:
    """Debezium's transaction metadata topic of one source."""
    return f"{source}.transaction"


def dead_letter_topic(pipeline: str) -> str:
    """Where the worker publishes undecodable records (besides `_tidemark/dead_letters`)."""
    return f"tidemark.{pipeline}.dead_letters"


def live_topic(prefix: str, table: str) -> str:
    """The compacted current-row-per-key topic of one lake table."""
    return f"{prefix}.live.{table}"


def source_topics(sources: Iterable[SourceLike]) -> list[SourceTopic]:
    """Every captured table's topic, in config order."""
    out = []
    for source in sources:
        kind: SourceKind = "sqlserver" if source.kind == "sqlserver" else "postgres"
        database = urlsplit(source.dsn).path.lstrip("/")
        if kind == "sqlserver" and database in ("", "unset"):
            from tidemark.stream_processors.distributed.errors import WorkerConfigError

            raise WorkerConfigError(
                f"source `{source.name}`: its topics name the SQL Server database, and its "
                "dsn gives none",
                hint="set the dsn's variables for the worker too, or write the database into "
                "the dsn (mssql://user:${PASSWORD}@host:1433/<database>)",
            )
        for table in source.tables:
            schema, name = split_table(table)
            topic = (
                f"{source.name}.{database}.{table}"
                if kind == "sqlserver"
                else f"{source.name}.{topic_part(schema)}.{topic_part(name)}"
            )
            keys = source.keys.get(table) if source.keys else None
            out.append(
                SourceTopic(
                    topic,
                    lake_name(source.name, schema, name),
                    source.name,
                    kind,
                    tuple(keys) if keys else None,
                )
            )
    return out

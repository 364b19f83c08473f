"""Lineage: source tables -> topics (distributed) -> changelog / live / forensic -> gold models.

Drawn from the config (which tables are captured, into which layers, through which topics)
and the lake (which layer tables exist, and the gold models that the refresher describes in
`<lake>/_tidemark/gold/<model>.json`: their status, the views they read and each output
column's sources and classification tags, docs/consumers.md).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from tidemark.config import PipelineConfig
from tidemark.kernel.columns import Layer
from tidemark.observe.lake import LakeMeta

logger = logging.getLogger(__name__)

NodeKind = Literal["source", "topic", "layer", "gold"]


class Node(BaseModel):
    """One box of the diagram."""

    id: str
    kind: NodeKind
    label: str
    table: str | None = Field(default=None, description="The lake table it belongs to, if any.")
    layer: str | None = None
    exists: bool = Field(default=True, description="Layers and models: the Delta table exists.")
    href: str | None = Field(default=None, description="The page of its table or model.")


class Edge(BaseModel):
    """Data flows from `source` to `target` (node ids)."""

    source: str
    target: str


def table_href(table: str) -> str:
    return f"/tables/{table}"


def lineage(config: PipelineConfig, meta: LakeMeta) -> Lineage:
    """The pipeline's lineage as nodes and edges."""
    nodes: list[Node] = []
    edges: list[Edge] = []
    topics: dict[str, str] = {}
    if config.kafka is not None:
        from tidemark.stream_processors.distributed.topics import source_topics

        topics = {t.table: t.topic for t in source_topics(config.sources)}
    for source in config.sources:
        for captured in source.tables:
            table = source.lake_table(captured)
            origin = f"source:{table}"
            nodes.append(
                Node(
                    id=origin,
                    kind="source",
                    label=f"{source.name}: {captured}",
                    table=table,
                    href=table_href(table),
                )
            )
            upstream = origin
            if table in topics:
                topic = f"topic:{topics[table]}"
                nodes.append(Node(id=topic, kind="topic", label=topics[table], table=table))
                edges.append(Edge(source=origin, target=topic))
                upstream = topic
            for layer in Layer:
                if layer not in config.layers_for(table):
                    continue
                node = f"{layer.value}:{table}"
                nodes.append(
                    Node(
                        id=node,
                        kind="layer",
                        label=f"{layer.value}.{captured.rsplit('.', 1)[-1]}",
                        table=table,
                        layer=layer.value,
                        exists=meta.layer(table, layer) is not None,
                        href=table_href(table),
                    )
                )
                edges.append(Edge(source=upstream, target=node))
    known = {n.id for n in nodes}
    models = gold_models(config.lake, config.storage_options)
    for model in models:
        node = f"gold:{model.name}"
        nodes.append(
            Node(
                id=node,
                kind="gold",
                label=f"gold.{model.name}" + (f" ({model.status})" if model.status != "ok" else ""),
                exists=model.status == "ok",
                href=f"/lineage#model-{model.name}",
            )
        )
    for model in models:
        for view in model.inputs:
            parsed = parse_view(view)
            if parsed is None:
                continue
            schema, name = parsed
            upstream = (
                f"gold:{name}" if schema == "gold" else f"{schema}:{_full_name(name, config)}"
            )
            if upstream in known or schema == "gold":
                edges.append(Edge(source=upstream, target=f"gold:{model.name}"))
    return Lineage(nodes=nodes, edges=edges, models=models)


def _full_name(name: str, config: PipelineConfig) -> str:
    """A lake table from a full or a last-part name (`accounts` -> `bank.public.accounts`)."""
    tables = [t for s in config.sources for t in config.lake_tables_of(s)]
    if name in tables:
        return name
    matches = [t for t in tables if t.rsplit(".", 1)[-1] == name]
    return matches[0] if len(matches) == 1 else name


GOLD_FOLDER = ("_tidemark", "gold")


class GoldColumn(BaseModel):
    """One output column of a gold model and the lake columns it comes from."""

    column: str
    expression: str | None = None
    sources: list[str] = Field(default_factory=list, description="`view.column` it reads.")
    tags: list[str] = Field(default_factory=list, description="Classification tags (pii...).")


class GoldModel(BaseModel):
    """A gold model as its writer describes it (`<lake>/_tidemark/gold/<model>.json`)."""

    name: str
    status: str | None = Field(default=None, description="ok, failed, waiting or never.")
    mode: str | None = None
    inputs: list[str] = Field(default_factory=list, description="The views it reads.")
    last_refresh: str | None = None
    last_error: str | None = None
    columns: list[GoldColumn] = Field(default_factory=list)


class Lineage(BaseModel):
    """The whole diagram, and the gold models' details."""

    nodes: list[Node]
    edges: list[Edge]
    models: list[GoldModel] = Field(default_factory=list)


_VIEW = re.compile(r'^(?P<schema>[a-z_]+)\.(?:"(?P<quoted>[^"]+)"|(?P<plain>[A-Za-z0-9_.]+))$')


def parse_view(text: str) -> tuple[str, str] | None:
    """`live."bank.public.accounts"` or `live.accounts` -> (schema, name); None otherwise."""
    match = _VIEW.match(text.strip())
    if match is None:
        return None
    return match.group("schema"), match.group("quoted") or match.group("plain")


def gold_models(root: str, storage_options: Mapping[str, str] | None = None) -> list[GoldModel]:
    """The gold models under a lake, from their status files (none when there are none).

    The files are written by the gold model refresher (`<lake>/_tidemark/gold/<model>.json`,
    format 1: `model`, `status`, `mode`, `inputs`, `last_refresh`, `last_error`, `columns`);
    an unreadable file is skipped.
    """
    from pyarrow import fs

    from tidemark.sinks.progress import filesystem

    try:
        filesystem_, base = filesystem(root, dict(storage_options or {}))
        folder = "/".join([base.rstrip("/"), *GOLD_FOLDER])
        infos = filesystem_.get_file_info(fs.FileSelector(folder, allow_not_found=True))
    except Exception as exc:  # unreachable storage: no models shown
        logger.info("cannot list gold models under %s: %s", root, exc)
        return []
    models = []
    for info in sorted(infos, key=lambda i: i.base_name):
        if info.type != fs.FileType.File or not info.base_name.endswith(".json"):
            continue
        try:
            with filesystem_.open_input_stream(info.path) as stream:
                body = json.loads(stream.read())
            models.append(_model(body, info.base_name.removesuffix(".json")))
        except Exception as exc:  # half-written or another format: skip it, say why
            logger.info("unreadable gold model status %s: %s", info.path, exc)
    return models


def _model(body: Mapping[str, object], fallback: str) -> GoldModel:
    refresh = body.get("last_refresh")
    error = body.get("last_error")
    columns = []
    for column in body.get("columns") or []:  # type: ignore[attr-defined]
        sources = column.get("sources") or []
        columns.append(
            GoldColumn(
                column=str(column.get("column")),
                expression=column.get("expression"),
                sources=[f"{s.get('view')}.{s.get('column')}" for s in sources],
                tags=sorted({str(s["tag"]) for s in sources if s.get("tag")}),
            )
        )
    return GoldModel(
        name=str(body.get("model") or fallback),
        status=str(body["status"]) if body.get("status") else None,
        mode=str(body["mode"]) if body.get("mode") else None,
        inputs=[str(i) for i in body.get("inputs") or []],  # type: ignore[attr-defined]
        last_refresh=str(refresh.get("at")) if isinstance(refresh, dict) else None,
        last_error=str(error.get("message")) if isinstance(error, dict) else None,
        columns=columns,
    )

"""Lineage: source tables -> topics (distributed) -> changelog / live / forensic -> gold models.

Drawn from the config (which tables are captured, into which layers, through which topics)
and the lake (which layer tables exist, which gold models are materialised under
`<lake>/gold/<model>` and what they read). A gold model's inputs come from the metadata the
model writer stores beside it (`gold_inputs`); a model without readable metadata is shown
without edges.
"""

from __future__ import annotations

import json
import logging
import os
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


class Lineage(BaseModel):
    """The whole diagram."""

    nodes: list[Node]
    edges: list[Edge]


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
    models = gold_inputs(config.lake, config.storage_options)
    for model, inputs in sorted(models.items()):
        node = f"gold:{model}"
        nodes.append(Node(id=node, kind="gold", label=f"gold.{model}", href=f"/lineage#{node}"))
        for schema, name in inputs:
            if schema == "gold":
                edges.append(Edge(source=f"gold:{name}", target=node))
            elif (upstream := f"{schema}:{_full_name(name, config)}") in known:
                edges.append(Edge(source=upstream, target=node))
    return Lineage(nodes=nodes, edges=edges)


def _full_name(name: str, config: PipelineConfig) -> str:
    """A lake table from a full or a last-part name (`accounts` -> `bank.public.accounts`)."""
    tables = [t for s in config.sources for t in config.lake_tables_of(s)]
    if name in tables:
        return name
    matches = [t for t in tables if t.rsplit(".", 1)[-1] == name]
    return matches[0] if len(matches) == 1 else name


def gold_inputs(
    root: str, storage_options: Mapping[str, str] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """Each gold model under `<lake>/gold/` and the (layer, table) pairs it reads.

    Inputs are read from the model's stored metadata (`<lake>/gold/<model>.lineage.json`
    or `<lake>/gold/_models/<model>.json`, with `inputs: [{schema, name}]`); a model
    without it has none. Local lakes only for now: object stores list no models.
    """
    if "://" in root and not root.startswith("file://"):
        return {}
    folder = os.path.join(os.path.abspath(root.removeprefix("file://")), "gold")
    if not os.path.isdir(folder):
        return {}
    found: dict[str, list[tuple[str, str]]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith(("_", ".")):
            continue
        if not os.path.isdir(os.path.join(entry.path, "_delta_log")):
            continue
        found[entry.name] = _stored_inputs(folder, entry.name)
    return found


def _stored_inputs(folder: str, model: str) -> list[tuple[str, str]]:
    for path in (
        os.path.join(folder, f"{model}.lineage.json"),
        os.path.join(folder, "_models", f"{model}.json"),
    ):
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as handle:
                body = json.load(handle)
            return [(str(i["schema"]), str(i["name"])) for i in body.get("inputs", [])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.info("unreadable lineage of gold model %s: %s", model, exc)
    return []

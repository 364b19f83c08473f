"""Wiring for gold models: the scheduler a pipeline config asks for, and `tidemark lineage`.

The config's `models:` names the folder (relative to the config file) and the refresh policy
per model; `classify:`/`tags:` say which columns the models see masked.
"""

from __future__ import annotations

import logging

import duckdb

from tidemark.config import PipelineConfig
from tidemark.kernel.errors import UsageError
from tidemark.sinks.gold.lineage import ColumnLineage, lineage_in, render_tree
from tidemark.sinks.gold.model import Model, load_models
from tidemark.sinks.gold.scheduler import GoldScheduler
from tidemark.sinks.lake import Lake
from tidemark.sinks.views.catalog import Catalog, discover
from tidemark.sinks.views.duck import connect
from tidemark.views import masking_for

logger = logging.getLogger(__name__)


def models_of(config: PipelineConfig) -> tuple[list[Model], dict[str, str]]:
    """The config's models and the broken ones (none when it names no folder)."""
    if config.models is None:
        return [], {}
    return load_models(config.models.path)


def build_scheduler(config: PipelineConfig, lake: Lake) -> GoldScheduler | None:
    """The gold scheduler of a pipeline, None when the config has no models."""
    if config.models is None:
        return None
    models, broken = models_of(config)
    for name, error in broken.items():
        logger.error("gold model %s cannot run: %s", name, error)
    settings = config.models
    return GoldScheduler(
        lake,
        tables=[t for source in config.sources for t in config.lake_tables_of(source)],
        models=models,
        refresh_seconds=settings.refresh_seconds,
        masking=masking_for(config),
        broken=broken,
    )


def lineage_text(config: PipelineConfig, name: str | None = None) -> str:
    """`tidemark lineage [MODEL]`: each model's column lineage as a text tree.

    Raises:
        UsageError: no models configured, an unknown model, or a model file that is broken.
    """
    if config.models is None:
        raise UsageError("this pipeline has no gold models", hint="add `models: DIR` to the config")
    models, broken = models_of(config)
    if name is not None:
        if name in broken:
            raise UsageError(f"model `{name}` cannot be read: {broken[name]}")
        known = ", ".join(sorted(m.name for m in models))
        models = [m for m in models if m.name == name]
        if not models:
            raise UsageError(f"no model `{name}`", hint=f"models: {known}")
    catalog = Catalog(
        discover(config.lake, storage_options=config.storage_options), masking_for(config)
    )
    con = connect(storage_options=config.storage_options)
    try:
        catalog.install(con)
        parts = []
        for model in models:
            parts.append(render_tree(model, _lineage(con, model, catalog)))
    finally:
        con.close()
    return "\n\n".join(parts)


def _lineage(con: duckdb.DuckDBPyConnection, model: Model, catalog: Catalog) -> list[ColumnLineage]:
    missing = [i for i in model.inputs if catalog.resolve(i.schema, i.name) is None]
    if missing:
        raise UsageError(
            f"model `{model.name}` reads {missing[0]}, which is not in the lake yet",
            hint="run the pipeline first; lineage resolves columns against the lake's tables",
        )
    columns = [str(r[0]) for r in con.execute(f"DESCRIBE {model.sql}").fetchall()]
    return lineage_in(con, model, catalog, columns)

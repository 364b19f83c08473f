"""Column-level lineage of a gold model, from its SQL (sqlglot's `lineage`).

For each output column: the expression that computes it and the lake columns it comes from
(view and column), each with its classification tag when it has one, so a reader sees which
gold columns carry masked data. Computed against the views' real columns (`SELECT *` and
unqualified names resolve), stored with the model's status (`status.py`) and printed by
`tidemark lineage` as a tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage

from tidemark.sinks.gold.model import MACROS, Input, Model
from tidemark.sinks.views.catalog import Catalog
from tidemark.sinks.views.duck import quote

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One lake column an output column derives from."""

    view: str
    column: str
    tag: str | None = None
    masking: str | None = None


@dataclass(frozen=True)
class ColumnLineage:
    """One output column of a model."""

    column: str
    expression: str
    sources: tuple[Source, ...]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(sorted({s.tag for s in self.sources if s.tag}))

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "sources": [asdict(s) for s in self.sources]}


Classifier = Callable[[Input, str], tuple[str, str] | None]


def model_lineage(
    model: Model,
    columns: Sequence[str],
    schemas: Mapping[Input, Sequence[str]],
    classify: Classifier = lambda view, column: None,
) -> list[ColumnLineage]:
    """Lineage of each output column in `columns`.

    Args:
        columns: the model's output columns (as its result has them).
        schemas: each input view's columns.
        classify: (view, column) -> (tag, masking) for classified lake columns.
    """
    tree = _with_macros_as_views(model)
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for view, names in schemas.items():
        schema.setdefault(view.schema, {})[view.name] = {n: "text" for n in names}
    found = []
    for column in columns:
        try:
            node = lineage(column, tree, schema=schema, dialect="duckdb")
        except SqlglotError as exc:
            log.info("model %s: no lineage for %s (%s)", model.name, column, exc)
            found.append(ColumnLineage(column, "?", ()))
            continue
        sources: list[Source] = []
        for leaf in node.walk():
            if leaf.downstream or not isinstance(leaf.expression, exp.Table):
                continue
            table = leaf.expression
            view = Input(table.db, table.name)
            name = leaf.name.rsplit(".", 1)[-1]
            rule = classify(view, name)
            sources.append(Source(str(view), name, *(rule or (None, None))))
        expression = node.expression
        if isinstance(expression, exp.Alias):
            expression = expression.this
        found.append(ColumnLineage(column, expression.sql("duckdb"), tuple(dict.fromkeys(sources))))
    return found


def _with_macros_as_views(model: Model) -> exp.Expr:
    """The model's SQL with `as_of('x', ...)` read as forensic.x (and `changes_between` as
    changelog.x), so lineage can follow columns through the macros."""
    tree = sqlglot.parse_one(model.sql, dialect="duckdb")
    for table in list(tree.find_all(exp.Table)):
        func = table.this
        if isinstance(func, exp.Anonymous) and func.name.lower() in MACROS and func.expressions:
            first = func.expressions[0]
            if isinstance(first, exp.Literal) and first.is_string:
                replacement = exp.table_(str(first.this), db=MACROS[func.name.lower()])
                if table.alias:
                    replacement.set("alias", table.args.get("alias"))
                table.replace(replacement)
    return tree


def render_tree(model: Model, lineages: Sequence[ColumnLineage]) -> str:
    """`tidemark lineage` text: the model, then one branch per column and its sources."""
    head = f"gold.{model.name}  ({model.mode}"
    head += f": {model.why_overwrite})" if model.why_overwrite else ")"
    lines = [head]
    for index, item in enumerate(lineages):
        last = index == len(lineages) - 1
        branch, stem = ("└── ", "    ") if last else ("├── ", "│   ")
        mark = f"  [{', '.join(item.tags)}: masked]" if item.tags else ""
        shown = "" if item.expression == item.column else f" = {item.expression}"
        lines.append(f"{branch}{item.column}{shown}{mark}")
        if not item.sources:
            lines.append(f"{stem}└── (no lake column: a constant or count(*))")
        for number, source in enumerate(item.sources):
            twig = "└── " if number == len(item.sources) - 1 else "├── "
            tag = f"  [{source.tag}: {source.masking}]" if source.tag else ""
            lines.append(f"{stem}{twig}{source.view}.{source.column}{tag}")
    return "\n".join(lines)


def lineage_in(
    con: duckdb.DuckDBPyConnection, model: Model, catalog: Catalog, columns: Sequence[str]
) -> list[ColumnLineage]:
    """Lineage of `model` against the views installed in `con` (their real columns)."""
    schemas: dict[Input, list[str]] = {}
    for item in model.inputs:
        view = f"{item.schema}.{quote(item.name)}"
        schemas[item] = [str(r[0]) for r in con.execute(f"DESCRIBE {view}").fetchall()]

    def classify(view: Input, column: str) -> tuple[str, str] | None:
        table = catalog.resolve(view.schema, view.name)
        if table is None or table.layer is None:
            return None
        return catalog.masking.of(table.name, column)

    return model_lineage(model, columns, schemas, classify)

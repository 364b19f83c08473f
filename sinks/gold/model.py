"""A gold model: one `<name>.sql` file (DuckDB dialect) and what its SQL allows.

Parsed with sqlglot once: the lake views it reads (its inputs: `live.x`, `forensic."a.b.c"`,
`as_of('x', ...)`, `changes_between('x', ...)`, `gold.y`), and whether it can refresh
incrementally. Incremental (`group`) means: one input, read from `live` or `forensic`, a
top-level GROUP BY whose every expression is an output column and uses only the input's
source columns (or `_tm_valid_from` of forensic), nothing that depends on the clock or chance,
no window function, LIMIT or set operation. Then a batch changes only the groups its changed
rows belong to (before and after the change), and those groups are recomputed and merged.
Everything else is refreshed by overwrite.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp

from tidemark.kernel.columns import BATCH_IN, VALID_FROM, is_metadata
from tidemark.kernel.errors import UsageError

SCHEMAS = ("changelog", "live", "forensic", "gold")
MACROS = {"as_of": "forensic", "changes_between": "changelog"}
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
VOLATILE = frozenset(
    {
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "get_current_timestamp",
        "get_current_time",
        "today",
        "random",
        "uuid",
        "gen_random_uuid",
        "setseed",
    }
)
STABLE_METADATA = frozenset({VALID_FROM, BATCH_IN})


class ModelError(UsageError):
    """A model file cannot be used as it is (name, syntax, unknown input)."""

    model: str | None = None


@dataclass(frozen=True)
class Input:
    """A view a model reads: schema (layer or `gold`) and the name as written."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f'{self.schema}."{self.name}"' if "." in self.name else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Incremental:
    """How a `group` model refreshes in part.

    Attributes:
        source: its one input.
        keys: the output columns that identify a group.
        expressions: per key, the SQL computing it from one input row (unqualified).
    """

    source: Input
    keys: tuple[str, ...]
    expressions: tuple[str, ...]


@dataclass(frozen=True)
class Model:
    """One gold model.

    Attributes:
        name: the file's stem: `gold.<name>`, `<lake>/gold/<name>`.
        path: the SQL file.
        sql: its text (one SELECT statement).
        inputs: the views it reads.
        incremental: set when the SQL allows a partial refresh (see the module doc).
        why_overwrite: when it does not, the reason (shown in status and lineage).
    """

    name: str
    path: Path
    sql: str
    inputs: tuple[Input, ...]
    incremental: Incremental | None = None
    why_overwrite: str | None = None
    tree: exp.Expr | None = field(default=None, compare=False, repr=False)

    @property
    def digest(self) -> str:
        """A hash of the SQL: a changed model is rebuilt whole once."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    @property
    def mode(self) -> str:
        return "incremental" if self.incremental else "overwrite"


def load_models(folder: str | os.PathLike[str]) -> tuple[list[Model], dict[str, str]]:
    """Every `*.sql` file of `folder`, parsed, in dependency order (a model after the gold
    models it reads), and the files that could not be used: name -> why. One broken model
    never keeps the others from running.

    Raises:
        ModelError: the folder is missing.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ModelError(
            f"models folder `{root}` does not exist",
            hint="create it with one <name>.sql file per model, or fix `models:` in the config",
        )
    models, broken = [], {}
    for path in sorted(root.glob("*.sql")):
        try:
            models.append(parse_model(path.stem, path.read_text(), path))
        except ModelError as exc:
            broken[path.stem] = exc.message
    while True:
        try:
            return order(models), broken
        except ModelError as exc:
            culprit = getattr(exc, "model", None)
            if culprit is None:
                raise
            broken[culprit] = exc.message
            models = [m for m in models if m.name != culprit]


def parse_model(name: str, sql: str, path: Path | None = None) -> Model:
    """Parse one model's SQL.

    Raises:
        ModelError: a bad name, not exactly one SELECT, or no lake view read.
    """
    where = path or Path(f"{name}.sql")
    if not NAME.match(name):
        raise ModelError(
            f"model file `{where}`: `{name}` is not a model name",
            hint="name it lower-case letters, digits and _ (it names gold.<name>)",
        )
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"model `{name}`: SQL does not parse: {first}", hint=str(where)) from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise ModelError(
            f"model `{name}`: must be exactly one SELECT statement",
            hint=f"{where}: the SELECT whose result is gold.{name}",
        )
    tree = statements[0]
    inputs = _inputs(tree)
    if not inputs:
        raise ModelError(
            f"model `{name}` reads no lake view",
            hint="read live.<table>, forensic.<table>, changelog.<table> or gold.<model>",
        )
    incremental, why = _incremental(tree, inputs)
    return Model(name, where, sql.strip().rstrip(";"), inputs, incremental, why, tree)


def _inputs(tree: exp.Expr) -> tuple[Input, ...]:
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    found: list[Input] = []
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Anonymous | exp.Func):
            func = table.this
            fname = (
                func.name.lower() if isinstance(func, exp.Anonymous) else func.sql_name().lower()
            )
            args = func.expressions
            if fname in MACROS and args and isinstance(args[0], exp.Literal) and args[0].is_string:
                found.append(Input(MACROS[fname], str(args[0].this)))
            continue
        schema = table.db.lower() if table.db else ""
        if schema in SCHEMAS and not table.catalog:
            found.append(Input(schema, table.name))
        elif not schema and table.name in ctes:
            continue
    return tuple(dict.fromkeys(found))


def _incremental(tree: exp.Expr, inputs: Sequence[Input]) -> tuple[Incremental | None, str | None]:
    if not isinstance(tree, exp.Select):
        return None, "a set operation or a non-SELECT top level"
    if len(inputs) != 1:
        return None, f"it reads {len(inputs)} views"
    if inputs[0].schema not in ("live", "forensic"):
        return None, f"it reads {inputs[0].schema}, not live or forensic"
    if any(
        isinstance(f, exp.Anonymous) and f.name.lower() in VOLATILE
        for f in tree.find_all(exp.Anonymous)
    ) or any(f.sql_name().lower() in VOLATILE for f in tree.find_all(exp.Func)):
        return None, "it depends on the clock or on chance (now(), random(), ...)"
    if (
        tree.find(exp.Window)
        or tree.args.get("limit")
        or tree.find(exp.With)
        or tree.find(exp.Subquery)
    ):
        return None, "a window function, LIMIT, CTE or subquery"
    if len(list(tree.find_all(exp.Table))) != 1 or tree.find(exp.Join):
        return None, "it joins"
    group = tree.args.get("group")
    if group is None:
        return None, "no GROUP BY"
    selected = list(tree.expressions)
    if group.args.get("all"):
        grouped = [e for e in selected if not e.find(exp.AggFunc)]
    else:
        grouped = []
        for expression in group.expressions:
            if isinstance(expression, exp.Literal) and not expression.is_string:
                position = int(expression.this)
                if not 1 <= position <= len(selected):
                    return None, f"GROUP BY {position} is no output column"
                grouped.append(selected[position - 1])
            else:
                grouped.append(expression)
    if not grouped:
        return None, "no GROUP BY"
    outputs = {_unaliased(e).sql("duckdb"): e.alias_or_name for e in selected}
    keys, expressions = [], []
    for expression in grouped:
        inner = _unaliased(expression)
        plain = inner.copy()
        for column in plain.find_all(exp.Column):
            column.set("table", None)
            if is_metadata(column.name) and not (
                inputs[0].schema == "forensic" and column.name in STABLE_METADATA
            ):
                return None, f"it groups by Tidemark's `{column.name}`"
        text = inner.sql("duckdb")
        if text in outputs:
            name = outputs[text]
        elif isinstance(inner, exp.Column) and inner.name in outputs.values():
            name = inner.name
        else:
            return None, f"GROUP BY `{text}` is not an output column"
        keys.append(name)
        expressions.append(plain.sql("duckdb"))
    return Incremental(inputs[0], tuple(keys), tuple(expressions)), None


def _unaliased(expression: exp.Expr) -> exp.Expr:
    return expression.this if isinstance(expression, exp.Alias) else expression


def order(models: Sequence[Model]) -> list[Model]:
    """Models in dependency order (gold inputs first).

    Raises:
        ModelError: a cycle, or a gold input that is no model.
    """
    by_name = {m.name: m for m in models}
    done: dict[str, Model] = {}

    def visit(model: Model, path: tuple[str, ...]) -> None:
        if model.name in done:
            return
        if model.name in path:
            error = ModelError(
                f"models read each other in a cycle: {' -> '.join((*path, model.name))}"
            )
            error.model = model.name
            raise error
        for item in model.inputs:
            if item.schema == "gold":
                upstream = by_name.get(item.name)
                if upstream is None:
                    error = ModelError(
                        f"model `{model.name}` reads gold.{item.name}, which is no model",
                        hint=f"add {item.name}.sql to the models folder",
                    )
                    error.model = model.name
                    raise error
                visit(upstream, (*path, model.name))
        done[model.name] = model

    for model in models:
        visit(model, ())
    return list(done.values())

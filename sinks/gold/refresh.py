"""Materialise one gold model at pinned input versions, into `<lake>/gold/<name>`.

The inputs are read at the Delta versions the caller pinned (`Lake.pin`, taken between two
batches: a transaction-consistent cut), through the same masked views consumers see. The
result gets the audit columns `_tm_refreshed_at`, `_tm_batch` (the batch it reflects) and
`_tm_input_positions` (lake table -> the source position its read version had applied), and
lands in one Delta commit: an overwrite, or for a `group` model a merge of the groups the
batches since the last refresh touched. Nothing is written until the SQL has run whole, and a
Delta commit is atomic, so a model that fails leaves its last good version.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from sqlglot import exp

from tidemark.kernel.columns import BATCH, BATCH_IN, BATCH_OUT, VALID_TO, Layer, is_metadata
from tidemark.kernel.errors import TerminalError
from tidemark.sinks.delta.table import table_uri
from tidemark.sinks.errors import delta_errors
from tidemark.sinks.gold.lineage import ColumnLineage, lineage_in
from tidemark.sinks.gold.model import Input, Model
from tidemark.sinks.lake import TablePin
from tidemark.sinks.views.catalog import Catalog, LakeTable, delta_scan
from tidemark.sinks.views.duck import connect, literal, quote

log = logging.getLogger(__name__)

REFRESHED_AT = "_tm_refreshed_at"
INPUT_POSITIONS = "_tm_input_positions"
GONE = "_tm_gone"
META_KEY = "tidemark.gold"


class ModelFailed(TerminalError):
    """A model's SQL or its write failed; its table keeps the last good version."""


class InputMissing(ModelFailed):
    """An input of the model has no Delta table yet (the pipeline has not written it)."""


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did."""

    model: str
    mode: str
    rows: int
    version: int
    batch: int
    seconds: float
    columns: tuple[str, ...]
    inputs: dict[str, dict[str, Any]]
    lineage: tuple[ColumnLineage, ...] = ()


@dataclass
class Refresher:
    """Refreshes models of one lake.

    Args:
        root: the lake root.
        catalog: the lake's tables (for names) and masking.
        app_id: the pipeline's app id; each gold commit carries `(<app_id>:gold:<model>, batch)`.
        storage_options: delta-rs storage options.
    """

    root: str
    catalog: Catalog
    app_id: str
    storage_options: Mapping[str, str] | None = None

    def uri(self, model: Model) -> str:
        return table_uri(self.root, "gold", model.name)

    def refresh(
        self, model: Model, pins: Mapping[tuple[str, Layer], TablePin], *, batch: int
    ) -> Refreshed:
        """Refresh `model` from the pinned inputs (`(lake table, layer) -> pin`).

        Raises:
            InputMissing: an input table does not exist yet.
            ModelFailed: the SQL failed, or its result cannot be written.
        """
        clock = time.perf_counter()
        tables = self._input_tables(model)
        con = connect(storage_options=self.storage_options)
        try:
            used = self._attach(con, tables, pins)
            self.catalog.install(con, relation=lambda t: used[t], only=list(used))
            previous = self._previous(model)
            plan = self._incremental_plan(model, tables, pins, previous)
            positions = {
                t.name: pins[(t.name, Layer(t.schema))].position or ""
                for t in used
                if t.layer is not None
            }
            select = _audited(model.sql, batch, positions)
            inputs: dict[str, dict[str, Any]] = {
                f"{t.schema}/{t.name}": _pin_json(pins[(t.name, Layer(t.schema))])
                for t in used
                if t.layer is not None
            }
            metadata = {"digest": model.digest, "inputs": inputs}
            try:
                if plan is None:
                    result = con.sql(select).to_arrow_table()
                    mode, rows, version = "overwrite", result.num_rows, 0
                    _check_columns(model, result.schema)
                    version = self._overwrite(model, result, batch, metadata)
                else:
                    mode = "incremental"
                    rows, version, result = self._merge(con, model, plan, select, batch, metadata)
            except duckdb.Error as exc:
                first = str(exc).strip().splitlines()[0]  # later lines quote the SQL
                raise ModelFailed(
                    f"model `{model.name}` failed: {first}", hint=f"fix {model.path}"
                ) from exc
            columns = tuple(n for n in result.schema.names if not is_metadata(n))
            try:
                lineage = tuple(lineage_in(con, model, self.catalog, columns))
            except duckdb.Error as exc:  # the table is written: lineage is extra
                log.warning("model %s: no lineage (%s)", model.name, str(exc).splitlines()[0])
                lineage = ()
        finally:
            con.close()
        return Refreshed(
            model.name,
            mode,
            rows,
            version,
            batch,
            time.perf_counter() - clock,
            columns,
            inputs,
            lineage,
        )

    # -- inputs ---------------------------------------------------------------------------
    def _input_tables(self, model: Model) -> dict[Input, LakeTable]:
        found = {}
        for item in model.inputs:
            table = self.catalog.resolve(item.schema, item.name)
            if table is None:
                raise InputMissing(
                    f"model `{model.name}` reads {item}, which is not in the lake yet",
                    hint="it appears with the table's first batch (or check the name)",
                )
            found[item] = table
        return found

    def _attach(
        self,
        con: duckdb.DuckDBPyConnection,
        tables: Mapping[Input, LakeTable],
        pins: Mapping[tuple[str, Layer], TablePin],
    ) -> dict[LakeTable, str]:
        """Attach each input at its pinned version; for a `live` input also its forensic
        layer (what changed since the last refresh is read there)."""
        wanted = set(tables.values())
        for table in list(wanted):
            if table.schema == Layer.LIVE.value:
                forensic = self.catalog.resolve(Layer.FORENSIC.value, table.name)
                if forensic is not None and (table.name, Layer.FORENSIC) in pins:
                    wanted.add(forensic)
        used: dict[LakeTable, str] = {}
        for index, table in enumerate(sorted(wanted, key=lambda t: (t.schema, t.name))):
            if table.layer is None:  # another gold model: its latest version
                used[table] = delta_scan(table)
                continue
            pin = pins.get((table.name, table.layer))
            if pin is None:
                raise InputMissing(
                    f"{table.schema}.{table.name} has no pinned version",
                    hint="the table has no commit yet",
                )
            alias = f"_tm_in_{index}"
            con.execute(f"ATTACH {literal(pin.uri)} AS {alias} (TYPE delta, VERSION {pin.version})")
            used[table] = alias
        return used

    # -- overwrite ------------------------------------------------------------------------
    def _overwrite(
        self, model: Model, result: pa.Table, batch: int, metadata: Mapping[str, Any]
    ) -> int:
        uri = self.uri(model)
        with delta_errors(uri):
            write_deltalake(
                uri,
                result,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=dict(self.storage_options or {}) or None,
                commit_properties=self._commit(model, batch, metadata),
            )
            return DeltaTable(
                uri, storage_options=dict(self.storage_options or {}) or None
            ).version()

    def _commit(self, model: Model, batch: int, metadata: Mapping[str, Any]) -> CommitProperties:
        return CommitProperties(
            app_transactions=[Transaction(f"{self.app_id}:gold:{model.name}", batch)],
            custom_metadata={META_KEY: json.dumps(metadata, sort_keys=True)},
        )

    def _previous(self, model: Model) -> dict[str, Any] | None:
        """The metadata of the model's last refresh (None before the first)."""
        uri = self.uri(model)
        options = dict(self.storage_options or {}) or None
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        for commit in DeltaTable(uri, storage_options=options).history(20):
            if META_KEY in commit:
                return dict(json.loads(commit[META_KEY]))
        return None

    # -- incremental ----------------------------------------------------------------------
    def _incremental_plan(
        self,
        model: Model,
        tables: Mapping[Input, LakeTable],
        pins: Mapping[tuple[str, Layer], TablePin],
        previous: Mapping[str, Any] | None,
    ) -> tuple[LakeTable, int] | None:
        """(the forensic table to read changes from, the batch of the last refresh), or None
        when this refresh must overwrite."""
        if model.incremental is None or previous is None or previous.get("digest") != model.digest:
            return None
        source = tables[model.incremental.source]
        forensic = self.catalog.resolve(Layer.FORENSIC.value, source.name)
        pin = pins.get((source.name, Layer.FORENSIC))
        if forensic is None or pin is None:
            return None
        before = previous.get("inputs", {}).get(f"forensic/{source.name}")
        if before is None or before.get("table_id") != pin.table_id:
            return None  # the table was created again: its batch ids start over
        if int(before["version"]) > pin.version:
            return None
        return forensic, int(before["batch"])

    def _merge(
        self,
        con: duckdb.DuckDBPyConnection,
        model: Model,
        plan: tuple[LakeTable, int],
        select: str,
        batch: int,
        metadata: Mapping[str, Any],
    ) -> tuple[int, int, pa.Table]:
        incremental = model.incremental
        assert incremental is not None
        forensic, since = plan
        keys = incremental.keys
        changed = f"{forensic.schema}.{quote(forensic.name)}"
        exprs = ", ".join(
            f"{e} AS {quote(k)}" for k, e in zip(keys, incremental.expressions, strict=True)
        )
        con.execute(
            f"""CREATE TEMP TABLE _tm_affected AS SELECT DISTINCT {exprs} FROM (
                SELECT * FROM {changed} WHERE {BATCH_IN} > {since} OR {BATCH_OUT} > {since}
                UNION ALL BY NAME
                SELECT * REPLACE (CAST(NULL AS TIMESTAMPTZ) AS {VALID_TO},
                                  CAST(NULL AS BIGINT) AS {BATCH_OUT})
                FROM {changed} WHERE {BATCH_OUT} > {since})"""
        )
        matches = " AND ".join(
            f"a.{quote(k)} IS NOT DISTINCT FROM ({_qualified(e, '_tm_s')})"
            for k, e in zip(keys, incremental.expressions, strict=True)
        )
        source = incremental.source
        view = f"{source.schema}.{quote(source.name)}"
        con.execute(
            f"CREATE TEMP VIEW _tm_changed_input AS SELECT _tm_s.* FROM {view} AS _tm_s "
            f"WHERE EXISTS (SELECT 1 FROM _tm_affected a WHERE {matches})"
        )
        rewritten = _replace_input(select, source, "_tm_changed_input")
        joined = " AND ".join(f"r.{quote(k)} IS NOT DISTINCT FROM a.{quote(k)}" for k in keys)
        merged = con.sql(
            f"SELECT r.* EXCLUDE ({', '.join(quote(k) for k in keys)}), "
            + ", ".join(f"a.{quote(k)}" for k in keys)
            + f", r.{REFRESHED_AT} IS NULL AS {GONE} FROM _tm_affected a "
            f"LEFT JOIN ({rewritten}) r ON {joined}"
        ).to_arrow_table()
        uri = self.uri(model)
        options = dict(self.storage_options or {}) or None
        dt = DeltaTable(uri, storage_options=options)
        target = pa.schema(dt.schema().to_arrow())
        columns = [n for n in merged.schema.names if n != GONE]
        if sorted(columns) != sorted(target.names):
            log.info("model %s: result columns changed; overwriting", model.name)
            result = con.sql(select).to_arrow_table()
            return result.num_rows, self._overwrite(model, result, batch, metadata), result
        values = {c: f"s.{quote(c)}" for c in columns}
        # Parenthesised: DataFusion binds AND tighter than IS NOT DISTINCT FROM.
        on = " AND ".join(f"(t.{quote(k)} IS NOT DISTINCT FROM s.{quote(k)})" for k in keys)
        with delta_errors(uri):
            (
                dt.merge(
                    merged,
                    predicate=on,
                    source_alias="s",
                    target_alias="t",
                    commit_properties=self._commit(model, batch, metadata),
                )
                .when_matched_delete(predicate=f"s.{GONE}")
                .when_matched_update(updates=values, predicate=f"NOT s.{GONE}")
                .when_not_matched_insert(updates=values, predicate=f"NOT s.{GONE}")
                .execute()
            )
            version = DeltaTable(uri, storage_options=options).version()
        written = merged.num_rows
        log.info("model %s: %d groups merged since batch %d", model.name, written, since)
        return written, version, merged


def _audited(sql: str, batch: int, positions: Mapping[str, str]) -> str:
    now = datetime.now(UTC).isoformat()
    entries = ", ".join(f"{literal(k)}: {literal(v)}" for k, v in sorted(positions.items()))
    mapping = f"MAP {{{entries}}}" if entries else "CAST(MAP {} AS MAP(VARCHAR, VARCHAR))"
    return (
        f"SELECT _tm_model.*, TIMESTAMPTZ {literal(now)} AS {REFRESHED_AT}, "
        f"CAST({batch} AS BIGINT) AS {BATCH}, {mapping} AS {INPUT_POSITIONS} "
        f"FROM ({sql}\n) AS _tm_model"
    )


def _check_columns(model: Model, schema: pa.Schema) -> None:
    audit = {REFRESHED_AT, BATCH, INPUT_POSITIONS}
    names = list(schema.names)
    clashing = [n for n in names[: len(names) - len(audit)] if is_metadata(n)]
    if clashing:
        raise ModelFailed(
            f"model `{model.name}` outputs `{clashing[0]}`, a name with Tidemark's `_tm_` prefix",
            hint="rename that column in the SELECT (the gold table adds its own _tm_ columns)",
        )
    if len(set(names)) != len(names):
        raise ModelFailed(
            f"model `{model.name}` outputs a column name twice",
            hint="give every SELECT column its own name",
        )


def _pin_json(pin: TablePin) -> dict[str, Any]:
    return {
        "version": pin.version,
        "batch": pin.batch,
        "position": pin.position,
        "table_id": pin.table_id,
    }


def _qualified(expression: str, alias: str) -> str:
    tree = sqlglot.parse_one(expression, dialect="duckdb")
    for column in tree.find_all(exp.Column):
        column.set("table", exp.to_identifier(alias))
    return tree.sql("duckdb")


def _replace_input(sql: str, source: Input, relation: str) -> str:
    """`sql` reading `relation` where it read the view `source` (alias kept, or the view's
    name as alias so qualified column references still resolve)."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    for table in tree.find_all(exp.Table):
        if (table.db or "").lower() == source.schema and table.name == source.name:
            alias = table.alias or table.name
            table.replace(exp.table_(relation).as_(alias, quoted=True))
    return tree.sql("duckdb")

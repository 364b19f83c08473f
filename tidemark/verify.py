"""`tidemark verify`: compare each source table with the lake, and check forensic invariants.

Consistency while the pipeline runs: the source side is read in a snapshot taken at a
known WAL position C (connectors/postgres/snapshot.py). We wait until the lake's consistent
cut (`sinks/watermark.py`: whole source transactions only) has passed C, then rebuild the
lake's state at C from the layers read at the cut: per key, the last changelog event before
C, and if it is not a delete, the forensic version in force after it (an ASOF join on
`_tm_position`). Both sides hash every row the same way (tidemark/canonical.py) and are
compared by key in DuckDB. Invariants (tidemark/invariants.py) run on the three layers read
at the cut. Exit status: non-zero on any difference.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import closing
from dataclasses import dataclass, field

import duckdb
from deltalake import DeltaTable

from tidemark import invariants
from tidemark.canonical import (
    Column,
    duckdb_rows,
    ident,
    install_macros,
    kind_of,
    postgres_rows,
)
from tidemark.config import PipelineConfig, SourceConfig
from tidemark.connectors.decode.position import lsn_position
from tidemark.connectors.kafka_connect import connect_slot
from tidemark.connectors.postgres.settings import replication_name
from tidemark.connectors.postgres.setup import connect
from tidemark.connectors.postgres.snapshot import Snapshot, consistent_snapshot, format_lsn
from tidemark.connectors.postgres.tables import describe
from tidemark.consistent import register_layer
from tidemark.invariants import rows, scalar
from tidemark.kernel.columns import COUNT, OP, POSITION, ROW, TX_ID, Layer, Op
from tidemark.kernel.errors import UsageError
from tidemark.kernel.names import location, split_table, sql_name
from tidemark.kernel.positions import SourceRecord
from tidemark.sinks.batch_log import BatchLog
from tidemark.sinks.delta.table import open_table
from tidemark.sinks.readers import register
from tidemark.sinks.watermark import Watermark, read_watermark
from tidemark.verify_wait import slot_state, wait_distributed

logger = logging.getLogger(__name__)

POSITION_KEY = "tidemark.position"  # the sinks' commit metadata (sinks/delta/table.py)


@dataclass(frozen=True)
class TableCheck:
    """The verdict for one table."""

    table: str
    source_rows: int
    lake_rows: int
    differences: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[str | None, ...]]] = field(default_factory=dict)
    findings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(self.differences.values()) and not self.findings


@dataclass(frozen=True)
class VerifyReport:
    """The verdict for a pipeline: the compared position and every table's check."""

    source_position: str
    lake_position: str | None
    waited_s: float
    tables: tuple[TableCheck, ...]
    watermark_batch: int | None = None

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)


def _uri(root: str, *parts: str) -> str:
    return location(root, *parts)


def _open(uri: str, storage_options: Mapping[str, str]) -> DeltaTable | None:
    return open_table(uri, storage_options)


def lake_position(root: str, storage_options: Mapping[str, str] | None = None) -> str | None:
    """The highest source position of the last batch in the batch log (None if empty)."""
    table = _open(_uri(root, "_tidemark", "batches"), storage_options or {})
    if table is None:
        return None
    for commit in table.history(20):
        if POSITION_KEY in commit:
            return str(commit[POSITION_KEY])
    return None


_COLUMNS = """
SELECT a.attname::text, bt.typname::text, bt.typcategory::text, et.typname::text,
       et.typcategory::text, a.atttypmod
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type e0 ON e0.oid = bt.typelem AND bt.typcategory = 'A'
LEFT JOIN pg_type et ON et.oid = CASE WHEN e0.typtype = 'd' THEN e0.typbasetype ELSE e0.oid END
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""


def source_columns(snapshot: Snapshot, table: str) -> tuple[list[Column], list[str] | None]:
    """A source table's columns (in order, domains resolved to their base types) and key.

    The key is what capture uses (connectors/postgres/tables.py): the primary key, or the
    `REPLICA IDENTITY USING INDEX` index's columns; None for a table without one (every
    row image is its identity, identical rows counted).

    Raises:
        UsageError: the table does not exist.
    """
    schema, name = split_table(table)
    found = snapshot.fetch(_COLUMNS, (schema, name))
    shape = describe(snapshot.fetch, schema, name)
    if not found or shape is None:
        raise UsageError(f"source table `{table}` not found", hint="check sources[].tables")
    columns = [
        Column(
            r[0],
            r[1],
            kind_of(r[1], r[2], r[5]),
            kind_of(r[3], r[4]) if r[3] is not None else None,
            r[5],
        )
        for r in found
    ]
    return columns, list(shape.key) if shape.key else None


def _load_layers(
    root: str, table: str, storage_options: Mapping[str, str], app_id: str, tries: int = 30
) -> dict[Layer, DeltaTable]:
    """The table's layers, read at the same batch (retried while the pipeline commits)."""
    for _ in range(tries):
        found = {
            layer: dt
            for layer in Layer
            if (dt := _open(_uri(root, layer.value, table), storage_options)) is not None
        }
        batches = {
            dt.transaction_version(f"{app_id}:{table}:{layer.value}") for layer, dt in found.items()
        }
        if len(batches) <= 1:
            return found
        time.sleep(0.2)
    logger.warning("table %s: layers kept moving; checking them at different batches", table)
    return found


def _lake_state(
    present: set[Layer],
    keys: list[str],
    snapshot: Snapshot,
    *,
    counted: bool = False,
    epoch: int = 0,
) -> tuple[str, str | None]:
    """SQL for the lake's rows of a table as the snapshot sees the source, and a caveat.

    An event counts when its transaction is visible in the snapshot (snapshot rows, op r,
    always are). pgoutput delivers transactions in commit order, so these are exactly the
    changelog's events before the first invisible transaction. In a table without a key
    every event changes its row's count, so the state is the version its last event made
    (none when that event took the count to zero). A TRUNCATE or DROP (ops `t`, `x`: one
    event for the whole table) ends every row whose last event precedes it.
    """
    k = ", ".join(ident(c) for c in keys)
    # Snapshot rows, and the deletes a re-snapshot made for rows it found gone (no
    # transaction), belong to no transaction: they count (verify waits for snapshots).
    vanished = f"({OP} = 'd' AND {TX_ID} IS NULL)"
    seen = f"({OP} = 'r' OR {vanished} OR {snapshot.visible_sql(TX_ID)})"
    if epoch:  # changes of a database replaced since: before anything this one holds
        seen = f"({seen} OR {POSITION} < '{lsn_position(0, epoch)}')"
    table_wide = f"{OP} IN ('{Op.TRUNCATE.value}', '{Op.DROP.value}')"
    emptied = f"(SELECT coalesce(max({POSITION}), '') FROM cl WHERE {table_wide} AND {seen})"
    if counted and {Layer.CHANGELOG, Layer.FORENSIC} <= present:
        on = " AND ".join(f"last.{ident(c)} = fo.{ident(c)}" for c in keys)
        return (
            f"""SELECT fo.* FROM (SELECT {k}, max({POSITION}) AS _p FROM cl
                WHERE {seen} AND NOT {table_wide} GROUP BY {k}) last
                JOIN fo ON {on} AND fo.{POSITION} = last._p WHERE last._p > {emptied}""",
            None,
        )
    if {Layer.CHANGELOG, Layer.FORENSIC} <= present:
        on = " AND ".join(f"last.{ident(c)} = fo.{ident(c)}" for c in keys)
        return (
            f"""SELECT fo.* FROM (
                  SELECT {k}, arg_max({OP}, {POSITION}) AS _op, max({POSITION}) AS _p
                  FROM cl WHERE {seen} AND NOT {table_wide} GROUP BY {k}) last
                ASOF JOIN fo ON {on} AND last._p >= fo.{POSITION}
                WHERE last._op <> 'd' AND last._p > {emptied}""",
            None,
        )
    if Layer.CHANGELOG in present:
        return (
            f"""SELECT * FROM cl WHERE {seen} AND NOT {table_wide}
                QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY {POSITION} DESC) = 1
                AND {OP} <> 'd' AND {POSITION} > {emptied}""",
            "state rebuilt from the changelog alone (placeholders of unchanged TOAST differ)",
        )
    return "SELECT * FROM lv", "no changelog: compared with live as it is (exact when idle)"


def check_table(
    snapshot: Snapshot,
    *,
    source_table: str,
    lake_table: str,
    root: str,
    storage_options: Mapping[str, str],
    app_id: str,
    key_override: tuple[str, ...] | None = None,
    sample: int = 5,
    excluded: Collection[str] = (),
    epoch: int = 0,
    watermark: Watermark | None = None,
) -> TableCheck:
    """Compare one source table (in `snapshot`) with its lake table, then the invariants.

    `excluded` columns are never captured (classified `raw: drop`) and not compared. `epoch`
    is the source's position epoch: transaction ids of earlier epochs belong to a database
    since replaced, so their changes all count as before the snapshot. With a `watermark`
    every layer is read at the lake's consistent cut (`tidemark/consistent.py`); without one
    (a lake that keeps none) the layers are read when they hold the same batch."""
    columns, found_keys = source_columns(snapshot, source_table)
    keys = list(key_override or found_keys or [ROW])
    columns = [c for c in columns if c.name not in excluded or c.name in keys]
    counted = keys == [ROW]  # no key: compare how many of each row image there are
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB 1.4.4 pushes a join's runtime filter into a registered pyarrow dataset scan and
    # loses every matching row (a keyless table's 3 row images joined as 0); off until fixed.
    con.execute("SET disabled_optimizers = 'join_filter_pushdown'")
    install_macros(con)
    with tempfile.TemporaryDirectory(prefix="tidemark-verify-") as tmp:
        path = os.path.join(tmp, "source.csv")
        quoted = sql_name(*split_table(source_table))
        snapshot.copy_to(postgres_rows(quoted, columns, keys, counted=counted), path)
        con.execute("CREATE TEMP TABLE src (k VARCHAR, h VARCHAR)")
        if os.path.getsize(path):  # DuckDB cannot sniff an empty file
            con.execute(
                "INSERT INTO src SELECT * FROM read_csv(?, header=false, "
                "columns={'k': 'VARCHAR', 'h': 'VARCHAR'}, quote='\"', escape='\"')",
                [path],
            )
    names = {Layer.CHANGELOG: "cl", Layer.FORENSIC: "fo", Layer.LIVE: "lv"}
    layers: set[Layer] = set()
    if watermark is not None:
        for layer in Layer:
            uri = _uri(root, layer.value, lake_table)
            if _open(uri, storage_options) is not None:
                select = register_layer(
                    con, f"_{names[layer]}", uri, layer, watermark, storage_options
                )
                con.execute(f"CREATE TEMP VIEW {names[layer]} AS {select}")
                layers.add(layer)
    else:
        for layer, dt in _load_layers(root, lake_table, storage_options, app_id).items():
            register(con, names[layer], dt.table_uri, storage_options=storage_options, dt=dt)
            layers.add(layer)
    source_rows = _rows_of(con, "src", counted)
    if not layers:
        counts = {"missing": scalar(con, "SELECT count(*) FROM src")} if source_rows else {}
        return TableCheck(lake_table, source_rows, 0, counts, notes=("no lake table yet",))
    any_layer = names[min(layers)]
    lake_types = {r[0]: r[1] for r in rows(con, f"DESCRIBE SELECT * FROM {any_layer}")}
    state, caveat = _lake_state(set(layers), keys, snapshot, counted=counted, epoch=epoch)
    hashed = duckdb_rows(f"({state})", columns, keys, lake_types, count=COUNT if counted else None)
    con.execute(f"CREATE TEMP TABLE lake AS {hashed}")
    lake_rows = _rows_of(con, "lake", counted)
    counts, examples = invariants.compare_hashed(con, "src", "lake", sample)
    findings = _invariant_findings(con, set(layers), columns, keys, lake_types, sample, counted)
    notes = tuple(n for n in [caveat] if n)
    missing_cols = [c.name for c in columns if c.name not in lake_types]
    if missing_cols:
        notes += (f"source columns not in the lake yet: {missing_cols}",)
    return TableCheck(lake_table, source_rows, lake_rows, counts, examples, findings, notes)


def _rows_of(con: duckdb.DuckDBPyConnection, relation: str, counted: bool) -> int:
    """Rows a hashed relation stands for (a counted one holds a count per row image)."""
    if counted:
        return int(scalar(con, f"SELECT coalesce(sum(CAST(h AS BIGINT)), 0) FROM {relation}"))
    return int(scalar(con, f"SELECT count(*) FROM {relation}"))


def _invariant_findings(
    con: duckdb.DuckDBPyConnection,
    present: set[Layer],
    columns: list[Column],
    keys: list[str],
    lake_types: dict[str, str],
    sample: int,
    counted: bool = False,
) -> tuple[str, ...]:
    if counted:  # the row's count is part of what live and forensic must agree on
        columns = [*columns, Column(ROW, "text", "text"), Column(COUNT, "int8", "int")]
    checks: list[Callable[[], str | None]] = []
    if Layer.FORENSIC in present:
        checks += [
            lambda: invariants.one_open_version(con, keys, sample),
            lambda: invariants.one_version_per_position(con, keys, sample),
            lambda: invariants.no_overlaps(con, keys, sample),
        ]
        if Layer.LIVE in present:
            checks.append(
                lambda: invariants.as_of_now_equals_live(con, columns, keys, lake_types, sample)
            )
        if Layer.CHANGELOG in present and counted:
            checks.append(lambda: invariants.changelog_implies_counts(con, keys))
        elif Layer.CHANGELOG in present:
            checks.append(
                lambda: invariants.changelog_implies_versions(con, columns, keys, lake_types)
            )
    if Layer.CHANGELOG in present:
        checks.insert(0, lambda: invariants.changelog_events_once(con, keys, sample))
    return tuple(f for check in checks if (f := check()) is not None)


def _record(config: PipelineConfig, source: SourceConfig) -> SourceRecord | None:
    """What the lake holds of `source` (None when the lake keeps no record of it)."""
    if _open(_uri(config.lake, "_tidemark", "batches"), config.storage_options) is None:
        return None
    log = BatchLog(config.lake, app_id=config.app_id, storage_options=config.storage_options)
    text = log.last_sources().get(source.name)
    return None if text is None else SourceRecord.from_json(text)


def _wait_armed(
    config: PipelineConfig, source: SourceConfig, slot: str, deadline: float
) -> SourceRecord | None:
    """Wait while a snapshot is under way into the lake (its rows are read after the
    snapshot verify takes would be): until none is, the pipeline stops, or `deadline`."""
    record = _record(config, source)
    while record is not None and record.arming and time.monotonic() < deadline:
        with closing(connect(source.dsn)) as conn, conn.cursor() as cur:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
        if not (row and row[0]):
            break
        logger.info("waiting for the snapshot of %s", ", ".join(sorted(record.arming)))
        time.sleep(0.5)
        record = _record(config, source)
    return record


def verify_source(
    config: PipelineConfig,
    source: SourceConfig,
    *,
    timeout: float = 120.0,
    sample: int = 5,
    on_wait: Callable[[str | None, str], None] | None = None,
) -> VerifyReport:
    """Verify one Postgres source against the lake at one consistent position.

    While the pipeline's slot is active it first waits for any snapshot under way into the
    lake to complete, then takes the source snapshot at position C and waits (up to
    `timeout` s in all) for the lake to reach C, as the runtime allows to tell
    (`tidemark/verify_wait.py`). Embedded: until the lake's consistent cut (the position
    every table holds whole; an idle pipeline keeps it moving with its checkpoints) has
    passed C; a lake that keeps no record of its positions falls back to: the slot's WAL
    sender sent past C and the lake has been quiet for a few batch latencies (never while a
    transaction is committed in parts). Distributed (a `kafka:` section): Connect's slot
    confirmed C, then the lake applied every partition of the source's topics up to its end
    offset. A stopped pipeline is compared at once. Every table is then read at one cut.
    """
    if source.kind != "postgres":
        raise UsageError(
            f"verify supports Postgres sources; `{source.name}` is `{source.kind}`",
            hint="verify SQL Server sources with the compose stack's checks",
        )
    started = time.monotonic()
    slot = (
        connect_slot(config.pipeline, source.name)
        if config.kafka is not None
        else replication_name(config.pipeline, source.name)
    )
    record = _wait_armed(config, source, slot, started + timeout)
    with consistent_snapshot(source.dsn) as snapshot:
        if config.kafka is not None:
            reached = wait_distributed(config, source, snapshot, timeout=timeout, on_wait=on_wait)
        else:
            reached = _wait_embedded(
                config,
                source,
                snapshot,
                slot=slot,
                record=record,
                deadline=started + timeout,
                on_wait=on_wait,
            )
        waited = time.monotonic() - started
        watermark = read_watermark(config.lake, config.storage_options)
        checks = tuple(
            check_table(
                snapshot,
                source_table=table,
                lake_table=source.lake_table(table),
                root=config.lake,
                storage_options=config.storage_options,
                app_id=config.app_id,
                key_override=source.keys.get(table),
                sample=sample,
                excluded=[
                    column
                    for column, (_, policy) in config.classified(source.lake_table(table)).items()
                    if policy.raw == "drop"
                ],
                epoch=record.epoch if record else 0,
                watermark=watermark,
            )
            for table in source.tables
        )
    return VerifyReport(
        format_lsn(snapshot.lsn),
        reached,
        waited,
        checks,
        watermark.batch_id if watermark is not None else None,
    )


def _progress(config: PipelineConfig, source: SourceConfig) -> tuple[str | None, object, bool]:
    """(the position the lake holds whole for `source`, a token that changes with every batch,
    whether a transaction is being committed in parts)."""
    watermark = read_watermark(config.lake, config.storage_options)
    if watermark is None:  # a lake that keeps no watermark: its batch log's last position
        position = lake_position(config.lake, config.storage_options)
        return position, position, False
    return watermark.positions.get(source.name), watermark.latest_batch, bool(watermark.open)


def _wait_embedded(
    config: PipelineConfig,
    source: SourceConfig,
    snapshot: Snapshot,
    *,
    slot: str,
    record: SourceRecord | None,
    deadline: float,
    on_wait: Callable[[str | None, str], None] | None,
) -> str | None:
    """Wait until the embedded pipeline's lake passed the snapshot (see `verify_source`)."""
    cutoff = lsn_position(snapshot.lsn, record.epoch if record else 0)[:16]
    quiet_s = max(5.0, 3 * config.batching.max_latency_ms / 1000)
    reached, moved, splitting = _progress(config, source)
    changed_at = time.monotonic()
    inactive_since: float | None = None
    while reached is None or reached < cutoff:
        active, _flushed, sent = slot_state(snapshot, slot)
        if not active:
            inactive_since = inactive_since or time.monotonic()
            if time.monotonic() - inactive_since >= 3.0:  # not a reconnect: stopped
                logger.info("slot %s is inactive: comparing the lake as it is", slot)
                break
        else:
            inactive_since = None
        if (
            record is None
            and sent is not None
            and sent >= snapshot.lsn
            and not splitting
            and (time.monotonic() - changed_at >= quiet_s)
        ):
            logger.info("everything up to %s was sent and the lake is quiet", cutoff)
            break
        if time.monotonic() > deadline:
            logger.warning("lake did not reach %s in time", cutoff)
            break
        if on_wait is not None:
            on_wait(reached, cutoff)
        time.sleep(0.5)
        reached, now, splitting = _progress(config, source)
        if now != moved:
            moved, changed_at = now, time.monotonic()
    return reached

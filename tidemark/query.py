"""SQL over the lake with DuckDB: one view per table and layer, plus an as-of helper.

Naming (documented in docs/pipeline.md): one DuckDB schema per layer, `changelog`, `live`
and `forensic`, holding a view per lake table under its full name, quoted because it has
dots: `live."shop.public.customers"`. When a table's last name part is unique in the lake,
the same view is also reachable by it: `live.customers`. `as_of(table, ts)` is a table macro
over the forensic view: the versions valid at `ts` (`_tm_valid_from <= ts < _tm_valid_to`,
or still open), i.e. the table as the source held it at that instant.

Delta tables are read through delta-rs (`DeltaTable.to_pyarrow_dataset()`), so DuckDB needs
no extension download; each view shows the table's latest committed version.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Literal

import duckdb
import pyarrow as pa

from tidemark.kernel.columns import VALID_FROM, VALID_TO, Layer
from tidemark.kernel.errors import UsageError
from tidemark.kernel.names import from_path_segment

logger = logging.getLogger(__name__)

OutputFormat = Literal["table", "csv", "json"]


@dataclass(frozen=True)
class LakeTable:
    """One Delta table of the lake: a layer and a lake table name."""

    layer: Layer
    name: str
    uri: str


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _is_local(root: str) -> bool:
    return "://" not in root or root.startswith("file://")


def _local_path(root: str) -> str:
    return root.removeprefix("file://")


def _list_dirs(uri: str, storage_options: Mapping[str, str] | None) -> list[str]:
    """Names of the sub-directories of `uri` (local path or object store)."""
    if _is_local(uri):
        path = _local_path(uri)
        if not os.path.isdir(path):
            return []
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    from pyarrow import fs

    options = dict(storage_options or {})
    filesystem, base = fs.FileSystem.from_uri(uri)
    if isinstance(filesystem, fs.S3FileSystem) and options:
        filesystem = fs.S3FileSystem(
            endpoint_override=options.get("AWS_ENDPOINT_URL"),
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            region=options.get("AWS_REGION", "us-east-1"),
            scheme="http" if options.get("AWS_ALLOW_HTTP") in ("true", "1") else "https",
        )
    infos = filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)


def discover(root: str, *, storage_options: Mapping[str, str] | None = None) -> list[LakeTable]:
    """Every Delta table under `<root>/<layer>/`, in layer then name order."""
    found: list[LakeTable] = []
    for layer in Layer:
        for name in _list_dirs(_join(root, layer.value), storage_options):
            if name.startswith((".", "_")):
                continue
            uri = _join(root, layer.value, name)
            if _is_local(uri) and not os.path.isdir(os.path.join(_local_path(uri), "_delta_log")):
                continue
            found.append(LakeTable(layer, from_path_segment(name), uri))
    return found


def short_names(names: Sequence[str]) -> dict[str, str]:
    """Lake table name -> its last part, for the parts that are unique across the lake."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return {name: part for name, part in zip(names, last, strict=True) if last.count(part) == 1}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(
    root: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    tables: Sequence[LakeTable] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views and the `as_of` macro.

    Raises:
        UsageError: the lake holds no tables yet.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    tables = list(tables) if tables is not None else discover(root, storage_options=storage_options)
    if not tables:
        raise UsageError(
            f"no Delta tables under `{root}`",
            hint="run the pipeline first (`tidemark up` or `tidemark run --config FILE`)",
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    aliases = short_names(sorted({t.name for t in tables}))
    for layer in Layer:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer.value}")
    opened = 0
    for index, table in enumerate(tables):
        try:
            dataset = DeltaTable(
                table.uri, storage_options=dict(storage_options or {})
            ).to_pyarrow_dataset()
        except (DeltaError, OSError, ValueError) as exc:
            # A table whose first commit is still being written (or was cut off) has a
            # `_delta_log` folder and nothing readable yet: leave it out, say so.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            logger.warning(
                "%s.%s is not readable yet, left out: %s", table.layer, table.name, first
            )
            continue
        opened += 1
        hidden = f"_tm_ds_{index}"
        con.register(hidden, dataset)
        names = [table.name] + ([aliases[table.name]] if table.name in aliases else [])
        for name in names:
            con.execute(f"CREATE VIEW {table.layer.value}.{_quote(name)} AS SELECT * FROM {hidden}")
    if not opened:
        raise UsageError(
            f"no readable Delta tables under `{root}` yet",
            hint="wait for the pipeline's first commit, then run the query again",
        )
    con.execute(
        f"""CREATE MACRO as_of(t, ts) AS TABLE
            SELECT * FROM query_table('forensic."' || t || '"')
            WHERE {VALID_FROM} <= CAST(ts AS TIMESTAMPTZ)
              AND ({VALID_TO} IS NULL OR {VALID_TO} > CAST(ts AS TIMESTAMPTZ))"""
    )
    logger.debug("lake %s: %d views", root, len(tables))
    return con


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run one statement and return its result as Arrow.

    Raises:
        UsageError: DuckDB rejected the SQL (syntax, unknown table or column).
    """
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (e.g. SET)
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(
            f"query failed: {first}",
            hint='views are live."<source>.<schema>.<table>" (or live.<table>), likewise '
            "changelog and forensic; as_of('<table>', TIMESTAMP '...') for history",
        ) from exc


def _jsonable(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def format_result(table: pa.Table, fmt: OutputFormat) -> str:
    """Render a result as CSV, JSON lines... or a plain text table (rich does the pretty one)."""
    rows = table.to_pylist()
    if fmt == "json":
        return "\n".join(
            json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False)
            for row in rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow(["" if v is None else _jsonable(v) for v in row.values()])
        return out.getvalue().rstrip("\n")
    widths = [len(n) for n in table.column_names]
    cells = [["NULL" if v is None else str(_jsonable(v)) for v in row.values()] for row in rows]
    for line in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    head = " | ".join(n.ljust(w) for n, w in zip(table.column_names, widths, strict=True))
    body = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join([head, "-+-".join("-" * w for w in widths), *body])

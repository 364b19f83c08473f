"""SQL over the lake with DuckDB: the consumer views (sinks/views) in an in-memory database.

The views are the ones `tidemark views` writes into a file (sinks/views/catalog.py: one
schema per layer plus `gold`, full and short names, `as_of` and `changes_between`), read
through DuckDB's `delta` extension, so merge-on-read tables read right. Every view reads its
table at the lake's consistent cut (`tidemark/consistent.py`): whole source transactions
only, the same cut in every table, even while a transaction too big for one batch is
committed in parts; `latest=True` shows each table's latest commit instead. Classified
columns are masked as in the views file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa

from tidemark.consistent import cut_relation
from tidemark.kernel.errors import UsageError
from tidemark.sinks.views.catalog import Catalog, LakeTable, discover, short_names
from tidemark.sinks.views.duck import connect as duck_connect
from tidemark.sinks.views.masking import Masking
from tidemark.sinks.watermark import read_watermark

__all__ = ["LakeTable", "connect", "discover", "run_query", "short_names"]

logger = logging.getLogger(__name__)

HINT = (
    'views are live."<source>.<schema>.<table>" (or live.<table>), likewise changelog, '
    "forensic and gold; as_of('<table>', TIMESTAMP '...') for history, "
    "changes_between('<table>', t1, t2) for changes"
)


def connect(
    root: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    tables: Sequence[LakeTable] | None = None,
    masking: Masking | None = None,
    latest: bool = False,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's consumer views and macros.

    Args:
        latest: read each table's latest commit, ignoring the consistent cut (a reader then
            may see part of a source transaction, see docs/pipeline.md).

    Raises:
        UsageError: the lake holds no tables yet.
        DeltaExtensionMissing: DuckDB's delta extension cannot be loaded.
    """
    tables = list(tables) if tables is not None else discover(root, storage_options=storage_options)
    if not tables:
        raise UsageError(
            f"no Delta tables under `{root}`",
            hint="run the pipeline first (`tidemark up` or `tidemark run --config FILE`)",
        )
    con = duck_connect(storage_options=storage_options)
    watermark = None if latest else read_watermark(root, storage_options)
    relation = cut_relation(con, watermark, storage_options)
    views = Catalog(tables, masking or Masking()).install(con, relation=relation)
    if not views:
        raise UsageError(
            f"no readable Delta tables under `{root}` yet",
            hint="a first commit may still be in progress; retry, or see `tidemark status`",
        )
    logger.debug(
        "lake %s: %d tables at %s",
        root,
        len(tables),
        "the latest commits" if watermark is None else f"consistent cut {watermark.batch_id}",
    )
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
        raise UsageError(f"query failed: {first}", hint=HINT) from exc

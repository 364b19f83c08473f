"""Forensic invariants over one lake table, checked in DuckDB (`tidemark verify`).

The relations `cl` (changelog), `fo` (forensic) and `lv` (live) must be registered on the
connection, read at the same batch. Each check returns None when it holds, else a one-line
finding with a few example keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from tidemark.canonical import Column, decode_key, duckdb_rows, ident
from tidemark.connectors.decode.position import PG_WIDTH
from tidemark.kernel.columns import OP, POSITION, VALID_FROM, VALID_TO, Op


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """All rows of a query (fetched to the end, so the connection is free again)."""
    return con.execute(sql).fetchall()


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The single value of a one-row, one-column query."""
    return rows(con, sql)[0][0]


def _keys(keys: Sequence[str]) -> str:
    return ", ".join(ident(k) for k in keys)


def _examples(rows: list[tuple]) -> str:
    shown = [r[0] if len(r) == 1 else r for r in rows]
    return ", ".join(str(s) for s in shown)


def one_open_version(
    con: duckdb.DuckDBPyConnection, keys: Sequence[str], sample: int
) -> str | None:
    """At most one open version (`_tm_valid_to` NULL) per key."""
    k = _keys(keys)
    sql = f"SELECT {k} FROM fo WHERE {VALID_TO} IS NULL GROUP BY {k} HAVING count(*) > 1"
    total = scalar(con, f"SELECT count(*) FROM ({sql})")
    if not total:
        return None
    found = rows(con, f"{sql} ORDER BY {k} LIMIT {sample}")
    return f"{total} key(s) with more than one open version, e.g. {_examples(found)}"


def one_version_per_position(
    con: duckdb.DuckDBPyConnection, keys: Sequence[str], sample: int
) -> str | None:
    """No key has two forensic versions at one source position (one event, one version)."""
    k = _keys(keys)
    sql = f"SELECT {k} FROM fo GROUP BY {k}, {POSITION} HAVING count(*) > 1"
    total = scalar(con, f"SELECT count(DISTINCT ({k})) FROM ({sql})")
    if not total:
        return None
    found = rows(con, f"SELECT DISTINCT {k} FROM ({sql}) ORDER BY {k} LIMIT {sample}")
    return f"{total} key(s) with two versions at one source position, e.g. {_examples(found)}"


def changelog_events_once(
    con: duckdb.DuckDBPyConnection, keys: Sequence[str], sample: int
) -> str | None:
    """Every changelog event is there once: unique by (key, position)."""
    k = _keys(keys)
    sql = f"SELECT {k} FROM cl GROUP BY {k}, {POSITION} HAVING count(*) > 1"
    counted = f"SELECT count(*) AS n FROM cl GROUP BY {k}, {POSITION}"
    total = scalar(con, f"SELECT coalesce(sum(n - 1), 0) FROM ({counted})")
    if not total:
        return None
    found = rows(con, f"SELECT DISTINCT {k} FROM ({sql}) ORDER BY {k} LIMIT {sample}")
    return f"the changelog holds {total} event(s) more than once, e.g. keys {_examples(found)}"


def no_overlaps(con: duckdb.DuckDBPyConnection, keys: Sequence[str], sample: int) -> str | None:
    """Per key, versions ordered by valid-from never overlap and each ends before the next."""
    k = _keys(keys)
    sql = f"""
        SELECT {k} FROM (
          SELECT {k}, {VALID_FROM} AS vf, {VALID_TO} AS vt,
                 lead({VALID_FROM}) OVER (PARTITION BY {k} ORDER BY {VALID_FROM}, {POSITION}) AS nf
          FROM fo)
        WHERE (vt IS NOT NULL AND vt < vf) OR (nf IS NOT NULL AND (vt IS NULL OR vt > nf))"""
    total = scalar(con, f"SELECT count(DISTINCT ({k})) FROM ({sql})")
    if not total:
        return None
    found = rows(con, f"SELECT DISTINCT {k} FROM ({sql}) ORDER BY {k} LIMIT {sample}")
    return f"{total} key(s) with overlapping or unordered intervals, e.g. {_examples(found)}"


def compare_hashed(
    con: duckdb.DuckDBPyConnection, left: str, right: str, sample: int
) -> tuple[dict[str, int], dict[str, list[tuple[str | None, ...]]]]:
    """Compare two (k, h) relations: counts and example keys of each kind of difference."""
    kinds = {
        "missing": f"SELECT k FROM {left} ANTI JOIN {right} USING (k)",
        "unexpected": f"SELECT k FROM {right} ANTI JOIN {left} USING (k)",
        "differing": f"SELECT k FROM {left} l JOIN {right} r USING (k) WHERE l.h <> r.h",
    }
    counts: dict[str, int] = {}
    examples: dict[str, list[tuple[str | None, ...]]] = {}
    for kind, sql in kinds.items():
        counts[kind] = scalar(con, f"SELECT count(*) FROM ({sql})")
        if counts[kind]:
            found = rows(con, f"{sql} ORDER BY k LIMIT {sample}")
            examples[kind] = [decode_key(r[0]) for r in found]
    return counts, examples


def as_of_now_equals_live(
    con: duckdb.DuckDBPyConnection,
    columns: Sequence[Column],
    keys: Sequence[str],
    lake_types: dict[str, str],
    sample: int,
) -> str | None:
    """The open forensic versions are exactly the live rows."""
    open_ = duckdb_rows(f"(SELECT * FROM fo WHERE {VALID_TO} IS NULL)", columns, keys, lake_types)
    live = duckdb_rows("lv", columns, keys, lake_types)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _open AS {open_}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _live AS {live}")
    counts, examples = compare_hashed(con, "_live", "_open", sample)
    if not any(counts.values()):
        return None
    parts = [f"{n} {kind} (e.g. {examples[kind]})" for kind, n in counts.items() if n]
    return "as-of(now) differs from live: " + "; ".join(parts)


def changelog_implies_versions(
    con: duckdb.DuckDBPyConnection,
    columns: Sequence[Column],
    keys: Sequence[str],
    lake_types: dict[str, str],
) -> str | None:
    """No source change is there twice under two positions, no snapshot row repeats its
    key's previous version, and the events imply exactly the forensic versions.

    A non-delete event makes a version unless the key's previous event was a non-delete with
    the same row (a no-op update). A snapshot row (op `r`) like that is the same source state
    read again (a snapshot redone) and must not be in the changelog at all.
    """
    # A streamed Postgres change is identified by its own LSN (and seq) alone; the commit
    # part of its position comes from Debezium's `sequence`, so a source change stored twice
    # under two positions would pass the check above.
    respelled = scalar(
        con,
        f"""SELECT count(*) - count(DISTINCT substr({POSITION}, 17)) FROM cl
            WHERE length({POSITION}) = {PG_WIDTH} AND substr({POSITION}, 17, 16) <> '{"0" * 16}'""",
    )
    if respelled:
        return f"the changelog holds {respelled} source change(s) twice, under different positions"
    # A TRUNCATE or DROP (`t`, `x`) is one event for the whole table: it carries no row,
    # and the next event of each key after it opens a version even if the row is the same.
    table_wide = f"{OP} IN ('{Op.TRUNCATE.value}', '{Op.DROP.value}')"
    rows_only = f"(SELECT * FROM cl WHERE NOT {table_wide})"
    hashed = duckdb_rows(rows_only, columns, keys, lake_types).replace(
        f" FROM {rows_only}", f", {OP} AS op, {POSITION} AS p FROM {rows_only}"
    )
    # The same row as the key's previous event, with no TRUNCATE or DROP between them.
    same = "coalesce(pop <> 'd' AND ph = h AND (tp IS NULL OR tp < pp), false)"
    implied, repeated = rows(
        con,
        f"""WITH ev AS ({hashed}),
                 wide AS (SELECT {POSITION} AS tp FROM cl WHERE {table_wide})
            SELECT count(*) FILTER (WHERE op <> 'd' AND NOT {same}),
                   count(*) FILTER (WHERE op = 'r' AND {same})
            FROM (SELECT op, h, tp, lag(op) OVER w AS pop, lag(h) OVER w AS ph,
                         lag(p) OVER w AS pp
                  FROM (SELECT ev.*, wide.tp FROM ev ASOF LEFT JOIN wide ON ev.p > wide.tp)
                  WINDOW w AS (PARTITION BY k ORDER BY p))""",
    )[0]
    if repeated:
        return (
            f"the changelog holds {repeated} snapshot row(s) that repeat their key's "
            "previous version (a snapshot read twice)"
        )
    versions = scalar(con, "SELECT count(*) FROM fo")
    if implied == versions:
        return None
    return f"the changelog implies {implied} version(s) but forensic holds {versions}"


def changelog_implies_counts(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> str | None:
    """A table without a key: every event changes its row image's count (+1 for a create or
    a read, -1 for a delete), and each event that leaves a count above zero is a version."""
    k = _keys(keys)
    implied = scalar(
        con,
        f"""SELECT count(*) FILTER (WHERE n > 0) FROM (
              SELECT sum(CASE WHEN {OP} = 'd' THEN -1 ELSE 1 END)
                     OVER (PARTITION BY {k} ORDER BY {POSITION}) AS n FROM cl)""",
    )
    versions = scalar(con, "SELECT count(*) FROM fo")
    if implied == versions:
        return None
    return f"the changelog implies {implied} version(s) but forensic holds {versions}"

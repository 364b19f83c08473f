"""How a table is cut into ranges the loader copies in parallel.

- `ctid` (the default): contiguous runs of the table's pages, `ctid >= '(a,0)' AND ctid <
  '(b,0)'` (a TID range scan since Postgres 14: each range reads only its pages). Every row
  is in exactly one range, whatever its key; the last range is open at the end.
- `key`: a single integer key split into equal spans between its minimum and maximum.
- a date or timestamp column by `day`, `month` or `year` (the seeds' month partitions):
  one range per period, the first one also holding NULLs and everything before it, the last
  everything after.

Ranges are planned once per load and kept with it (`sinks/loads.py`), so a load resumed
after a crash reads exactly the ranges it had not finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from tidemark.kernel.names import quote, sql_name

Period = Literal["day", "month", "year"]
MAX_RANGES = 4096


@dataclass(frozen=True)
class Range:
    """One range of a table: its number in the load and its SQL predicate."""

    index: int
    where: str


@dataclass(frozen=True)
class RangePlan:
    """How a table was cut.

    Attributes:
        kind: `ctid`, `key` or `column`.
        ranges: the ranges, in order.
        rows: the row estimate the plan was made with (for progress).
    """

    kind: str
    ranges: tuple[Range, ...]
    rows: int


def count_for(rows: int, workers: int, rows_per_range: int) -> int:
    """How many ranges: enough for every worker several times over (so they finish
    together), and small enough that a resumed load redoes little."""
    wanted = max(workers * 4, math.ceil(rows / max(rows_per_range, 1)))
    return max(1, min(MAX_RANGES, wanted))


def _estimate(cursor: Any, schema: str, name: str) -> tuple[int, int]:
    """(pages, estimated rows) of a table right now."""
    cursor.execute(
        "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int,"
        " GREATEST(c.reltuples, 0)::bigint"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    row = cursor.fetchone()
    if row is None:
        raise ValueError(f"table `{schema}.{name}` does not exist")
    pages, rows = int(row[0]), int(row[1])
    if rows == 0 and pages > 0:  # never analyzed: about 100 rows a page
        rows = pages * 100
    return pages, rows


def ctid_ranges(
    cursor: Any, schema: str, name: str, *, workers: int, rows_per_range: int
) -> RangePlan:
    """Ranges of the table's pages."""
    pages, rows = _estimate(cursor, schema, name)
    count = min(count_for(rows, workers, rows_per_range), max(pages, 1))
    step = max(1, math.ceil(pages / count)) if pages else 1
    bounds = list(range(0, pages, step))[1:] if pages else []
    ranges = []
    start = 0
    for index, end in enumerate(bounds):
        ranges.append(Range(index, f"ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid"))
        start = end
    ranges.append(Range(len(ranges), f"ctid >= '({start},0)'::tid"))
    return RangePlan("ctid", tuple(ranges), rows)


def key_ranges(
    cursor: Any, schema: str, name: str, column: str, *, workers: int, rows_per_range: int
) -> RangePlan:
    """Equal spans of an integer key between its minimum and maximum."""
    _, rows = _estimate(cursor, schema, name)
    column_sql = quote(column)
    cursor.execute(f"SELECT min({column_sql}), max({column_sql}) FROM {sql_name(schema, name)}")
    low, high = cursor.fetchone() or (None, None)
    null_first = f"{column_sql} IS NULL"
    if low is None or high is None:
        return RangePlan("key", (Range(0, "true"),), rows)
    low, high = int(low), int(high)
    count = count_for(rows, workers, rows_per_range)
    step = max(1, math.ceil((high - low + 1) / count))
    cuts = list(range(low + step, high + 1, step))
    ranges = []
    previous: int | None = None
    for index, cut in enumerate(cuts):
        lower = (
            f"{null_first} OR {column_sql} < {cut}"
            if previous is None
            else (f"{column_sql} >= {previous} AND {column_sql} < {cut}")
        )
        ranges.append(Range(index, lower))
        previous = cut
    last = "true" if previous is None else f"{column_sql} >= {previous}"
    ranges.append(Range(len(ranges), last))
    return RangePlan("key", tuple(ranges), rows)


def _period_start(value: date, period: Period) -> date:
    if period == "year":
        return date(value.year, 1, 1)
    if period == "month":
        return date(value.year, value.month, 1)
    return value


def _next(value: date, period: Period) -> date:
    from datetime import timedelta

    if period == "year":
        return date(value.year + 1, 1, 1)
    if period == "month":
        return date(value.year + value.month // 12, value.month % 12 + 1, 1)
    return value + timedelta(days=1)


def column_ranges(cursor: Any, schema: str, name: str, column: str, period: Period) -> RangePlan:
    """One range per `period` of a date or timestamp column (the seeds' month partitions).

    Raises:
        ValueError: the span holds more than `MAX_RANGES` periods (choose a longer one).
    """
    _, rows = _estimate(cursor, schema, name)
    column_sql = quote(column)
    cursor.execute(
        f"SELECT min({column_sql})::date, max({column_sql})::date FROM {sql_name(schema, name)}"
        f" WHERE {column_sql} > '-infinity' AND {column_sql} < 'infinity'"
    )
    low, high = cursor.fetchone() or (None, None)
    if not isinstance(low, date) or not isinstance(high, date):
        return RangePlan("column", (Range(0, "true"),), rows)
    starts = []
    current = _period_start(low, period)
    while current <= high:
        starts.append(current)
        current = _next(current, period)
        if len(starts) > MAX_RANGES:
            raise ValueError(
                f"`{column}` spans more than {MAX_RANGES} {period}s; range it by a longer period"
            )
    ranges = []
    for index, start in enumerate(starts):
        end = _next(start, period)
        if index == 0:
            where = f"{column_sql} IS NULL OR {column_sql} < '{end.isoformat()}'"
        elif index == len(starts) - 1:
            where = f"{column_sql} >= '{start.isoformat()}'"
        else:
            where = f"{column_sql} >= '{start.isoformat()}' AND {column_sql} < '{end.isoformat()}'"
        ranges.append(Range(index, where))
    if len(starts) == 1:
        ranges = [Range(0, "true")]
    return RangePlan("column", tuple(ranges), rows)

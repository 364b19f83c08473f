"""`tidemark query` output: wide results fold to the terminal, or print one record per block."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa

from tidemark.render import format_result

WIDE = pa.table(
    {
        **{f"column_{i:02d}": [f"value {i} of a row", None] for i in range(18)},
        "balance": [Decimal("10.50"), Decimal("-3.00")],
    }
)


def test_a_wide_result_shows_the_columns_that_fit_and_names_the_rest() -> None:
    text = format_result(WIDE, "table", width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines[:-1])
    head = lines[0].split(" | ")
    assert [h.strip() for h in head] == ["column_00", "column_01", "column_02", "column_03"]
    assert "value 0 of a row" in lines[2] and "…" not in lines[2]  # whole values, not squeezed
    omitted = [f"column_{i:02d}" for i in range(4, 18)] + ["balance"]
    assert lines[-1] == (
        f"(15 more columns not shown: {', '.join(omitted)}; --format records shows every column)"
    )


def test_records_print_every_column_of_a_row() -> None:
    text = format_result(WIDE, "records")
    blocks = text.split("-[ record ")
    assert len(blocks) == 3
    assert "balance   | 10.50" in blocks[1] and "column_17 | NULL" in blocks[2]


def test_a_narrow_result_is_a_plain_table() -> None:
    text = format_result(pa.table({"id": [1, 2], "name": ["ada", None]}), "table", width=80)
    assert text.splitlines() == ["id | name", "---+-----", "1  | ada ", "2  | NULL"]

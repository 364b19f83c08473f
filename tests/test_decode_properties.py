"""Properties of the encodings the decoder relies on (hypothesis)."""

from __future__ import annotations

import base64
from decimal import Decimal, localcontext

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from tidemark.connectors.decode.position import PositionState, postgres_position, sqlserver_position
from tidemark.connectors.decode.types import column_type, decimal_text, parse_interval

LSN = st.integers(min_value=1, max_value=2**63 - 1)
SQL_LSN = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1))


def _pg(commit: int, lsn: int) -> str:
    source = {"lsn": lsn, "sequence": f'["{commit}","{lsn}"]'}
    return postgres_position(source, "u", PositionState())


@given(st.lists(st.tuples(LSN, LSN), min_size=2, max_size=20, unique=True))
def test_postgres_positions_sort_like_commit_then_lsn(pairs):
    encoded = {pair: _pg(*pair) for pair in pairs}
    assert sorted(pairs) == sorted(pairs, key=encoded.__getitem__)
    assert {len(p) for p in encoded.values()} == {40}


def _ss_lsn(parts: tuple[int, int, int]) -> str:
    return f"{parts[0]:08x}:{parts[1]:08x}:{parts[2]:04x}"


@given(
    st.lists(
        st.tuples(SQL_LSN, SQL_LSN, st.integers(1, 2**31)), min_size=2, max_size=20, unique=True
    )
)
def test_sqlserver_positions_sort_like_commit_change_serial(events):
    state = PositionState()
    encoded = {
        e: sqlserver_position(
            {
                "commit_lsn": _ss_lsn(e[0]),
                "change_lsn": _ss_lsn(e[1]),
                "event_serial_no": str(e[2]),
            },
            "u",
            state,
        )
        for e in events
    }
    assert sorted(events) == sorted(events, key=encoded.__getitem__)
    assert {len(p) for p in encoded.values()} == {48}


@given(st.integers(-(10**40), 10**40), st.integers(0, 60))
def test_decimal_text_is_the_exact_value(unscaled, scale):
    with localcontext() as ctx:
        ctx.prec = 200
        assert Decimal(decimal_text(unscaled, scale)) == Decimal(unscaled).scaleb(-scale)
    assert len(decimal_text(unscaled, scale).partition(".")[2]) == scale


@given(
    st.lists(st.one_of(st.none(), st.integers(-(10**37) + 1, 10**37 - 1)), max_size=30),
    st.integers(0, 20),
)
def test_fixed_decimals_build_the_same_values_as_pyarrow(unscaled, scale):
    def b64(n: int) -> str:
        return base64.b64encode(n.to_bytes(17, "big", signed=True)).decode()

    kind = column_type(
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": str(scale), "connect.decimal.precision": "38"},
        }
    )
    got = kind.convert([None if u is None else b64(u) for u in unscaled])
    with localcontext() as ctx:  # the default 28 digits would round the expectation
        ctx.prec = 100
        want = pa.array(
            [None if u is None else Decimal(u).scaleb(-scale) for u in unscaled],
            type=pa.decimal128(38, scale),
        )
    assert got.equals(want)


@given(
    st.integers(-(10**6), 10**6),
    st.integers(-11, 11),
    st.integers(-(10**4), 10**4),
    st.integers(-(10**3), 10**3),
    st.integers(-59, 59),
    st.integers(0, 59),
    st.integers(0, 999_999),
)
def test_intervals_parse_each_component(years, months, days, hours, minutes, secs, micros):
    sign = "-" if minutes < 0 or hours < 0 else ""
    text = f"P{years}Y{months}M{days}DT{hours}H{minutes}M{sign}{secs}.{micros:06d}S"
    got = parse_interval(text)
    sec_nanos = (secs * 10**6 + micros) * 1000
    assert got == (
        years * 12 + months,
        days,
        (hours * 3600 + minutes * 60) * 10**9 + (-sec_nanos if sign else sec_nanos),
    )

"""Freshness, its colours and the SLA config: the rules the status, the page and the
metrics share (tidemark/observe/freshness.py, docs/observability.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tidemark.config import parse_config, parse_duration
from tidemark.errors import ConfigError
from tidemark.kernel.columns import Layer
from tidemark.observe import freshness as fr

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_freshness_is_the_source_newest_commit_minus_the_watermark_never_negative():
    assert fr.freshness(T0 + timedelta(seconds=75), T0) == 75.0
    # the lake holds the newest commit (statistics round up to the millisecond): 0, not -0.4
    assert fr.freshness(T0, T0 + timedelta(milliseconds=400)) == 0.0
    assert fr.freshness(T0, None) is None  # no data yet: unknown, not 0


def test_the_watermark_is_the_newest_applied_change_or_a_later_caught_up_mark():
    applied, mark = T0, T0 + timedelta(seconds=30)
    assert fr.watermark(applied, [mark]) == mark
    assert fr.watermark(applied, [None]) == applied
    assert fr.watermark(None, [mark]) == mark
    assert fr.watermark(None, []) is None


def test_reference_time_prefers_the_source_newest_commit_then_its_clock_then_ours():
    now = T0 + timedelta(hours=1)
    assert fr.reference_time(latest_commit=T0, source_clock=now, now=now) == T0
    assert fr.reference_time(latest_commit=None, source_clock=T0, now=now) == T0
    assert fr.reference_time(latest_commit=None, source_clock=None, now=now) == now


@pytest.mark.parametrize(
    ("seconds", "sla", "colour"),
    [
        (0.0, 60.0, "green"),
        (30.0, 60.0, "green"),
        (30.1, 60.0, "amber"),
        (60.0, 60.0, "amber"),
        (60.1, 60.0, "red"),
        (5.0, None, "none"),
        (None, 60.0, "none"),
    ],
)
def test_colours_green_to_half_the_sla_amber_to_it_red_above(seconds, sla, colour):
    assert fr.colour(seconds, sla) == colour


def test_snapshot_positions_are_recognised():
    assert fr.is_snapshot_position("00000000019a1768" + "0" * 16 + "0000002a")
    assert not fr.is_snapshot_position("00000000019a1768" + "00000000019a17a0" + "00000000")
    assert not fr.is_snapshot_position(None)
    assert not fr.is_snapshot_position("00000001:0000002a")  # SQL Server or other shapes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60),
        ("10m", 600),
        ("1.5m", 90),
        ("1h", 3600),
        ("500ms", 0.5),
        (90, 90),
        ("2d", 172800),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


BASE = {
    "pipeline": "p",
    "sources": [
        {
            "name": "s",
            "kind": "postgres",
            "dsn": "postgresql://u:p@h:1/d",
            "tables": ["public.a", "public.b"],
        }
    ],
}


def test_sla_defaults_wildcard_and_per_table():
    config = parse_config(BASE)
    assert (config.sla_for("s.public.a").live, config.sla_for("s.public.a").forensic) == (60, 600)
    assert config.sla_for("s.public.a").for_layer(Layer.CHANGELOG) is None
    config = parse_config(
        {**BASE, "sla": {"*": {"live": "30s"}, "s.public.b": {"forensic": "1h", "live": None}}}
    )
    assert config.sla_for("s.public.a").for_layer(Layer.LIVE) == 30
    assert config.sla_for("s.public.a").for_layer(Layer.FORENSIC) == 600  # default kept
    assert config.sla_for("s.public.b").for_layer(Layer.LIVE) is None  # no target
    assert config.sla_for("s.public.b").for_layer(Layer.FORENSIC) == 3600
    # a table's entry overrides `*` key by key
    config = parse_config({**BASE, "sla": {"*": {"live": "30s"}, "s.public.b": {"forensic": "1h"}}})
    assert config.sla_for("s.public.b").for_layer(Layer.LIVE) == 30


@pytest.mark.parametrize(
    ("sla", "message"),
    [
        ({"*": {"live": "6x"}}, r"sla\.\*\.live: must be a duration such as 60s.*got `6x`"),
        ({"*": {"live": -1}}, r"sla\.\*\.live: must be a positive duration"),
        ({"*": {"gold": "1s"}}, r"sla\.\*\.gold: is not a known key"),
        ({"s.public.zz": {"live": "1s"}}, r"sla names unknown tables \['s\.public\.zz'\]"),
    ],
)
def test_bad_sla_names_the_key_and_the_fix(sla, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, "sla": sla})

"""PMTA times: one reading whatever path reads them (the metrics' polars expression or Python's parser) and whatever
the host's time zone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import timeparse
from exporter.aggregate import pmta_epoch
from exporter.timeparse import parse_pmta_time

VALUES = [
    "2016-05-29 01:10:51+0200", "2016-05-29 01:10:51-0400", "2016-05-29 01:10:51+0530", "2016-05-29 01:10:51+1345",
    "2016-05-29 01:10:51+02:00", "2016-05-29T01:10:51+0200", "2016-05-29 01:10:51Z", "2016-05-29 01:10:51",
    "2016-05-29 01:10:51.5+0200", "2016-05-29 01:10:51.123456+0200", "2016-12-31 23:59:60+0000",
    "2016-05-29 24:00:00+0000", "2016-05-29 01:10:51+2400", "2016-05-29 01:10:51+02", "2016-05-29 01:10:51 +0200",
    "2016-05-29 01:10:51+0200 ", "2016-05-29 01:10:51+0200x", "2016-5-29 1:10:51+0200", "2016-05-29 1:10:51+0200",
    "2016-05-29 01:10+0200", "2016-05-29 01:10:51+020000", "1464477051", "1464477051.5", " 1464477051",
    "+1464477051", "1464477051.", ".5", "1e9", "1_464_477_051", "0", "-1", "nan", "inf", "253402300800",
    "0x10", "\u0661\u0664\u0666\u0664\u0664\u0667\u0667\u0660\u0665\u0661", "2016-05-29", "20160529",
    "9999-12-31 23:59:59+0000", "2016-05-29 01:10:51-00:00", "2016-05-29 01:10:51,5+0200",
]


def _polars(values: list[str]) -> list[float | None]:
    return pl.DataFrame({"s": values}, schema={"s": pl.String}).select(pmta_epoch(pl.col("s"))).to_series().to_list()


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    timeparse._cache.clear()
    yield
    timeparse._cache.clear()


@pytest.mark.usefixtures("fresh_cache")
def test_every_time_the_metrics_read_is_read_the_same_by_pythons_parser() -> None:
    """The metrics read a leap second and unpadded fields where the correlator read no time (and took the clock)."""
    differ = [(v, p, parse_pmta_time(v)) for v, p in zip(VALUES, _polars(VALUES), strict=True)
              if p is not None and p != parse_pmta_time(v)]
    assert differ == []


def _field(value: int, width: int, padded: bool) -> str:
    return f"{value:0{width}d}" if padded else str(value)


@settings(max_examples=500, deadline=None)
@given(st.tuples(st.integers(1970, 2100), st.integers(1, 13), st.integers(1, 32), st.integers(0, 24),
                 st.integers(0, 60), st.integers(0, 60), st.sampled_from(["+", "-"]), st.integers(0, 24),
                 st.integers(0, 60), st.lists(st.booleans(), min_size=6, max_size=6), st.sampled_from(["", ":"]),
                 st.sampled_from([" ", "  ", "T"])))
def test_iso_times_padded_or_not_are_read_alike(parts: tuple[Any, ...]) -> None:
    """Every field padded or not, offsets with or without a colon, one or two spaces or a T: whatever the metrics'
    polars reading takes, Python's takes as the same instant (24-byte forms with an unpadded field and a colon
    offset were read by polars alone)."""
    year, month, day, hour, minute, second, sign, oh, om, padded, colon, sep = parts
    value = (f"{_field(year, 4, padded[0])}-{_field(month, 2, padded[1])}-{_field(day, 2, padded[2])}{sep}"
             f"{_field(hour, 2, padded[3])}:{_field(minute, 2, padded[4])}:{_field(second, 2, padded[5])}"
             f"{sign}{oh:02d}{colon}{om:02d}")
    [p] = _polars([value])
    assert p is None or p == parse_pmta_time(value), value


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_a_time_without_an_offset_does_not_depend_on_the_hosts_time_zone(zone: str) -> None:
    """Read as UTC, as the API reads one: in the host's zone the same file gave other delays under another TZ."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        got = parse_pmta_time("2024-05-01 10:00:00"), parse_pmta_time("2024-05-01T10:00:00.5")
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
    assert got == (1714557600.0, 1714557600.5)


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("value", ["2016-05-29", "1_464_477_051", "\u0661\u0664\u0666\u0664\u0664\u0667\u0667\u0660",
                                   "2016-05-29 01:10:51+0200\u00a0"])
def test_what_pmta_never_writes_is_no_time(value: str) -> None:
    """A date alone, digits grouped with `_`, digits of other scripts: Python's parsers take them, PMTA writes none."""
    assert parse_pmta_time(value) is None

"""PMTA times: one reading whatever path reads them (the metrics' polars expression or Python's parser) and whatever
the host's time zone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

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


@settings(max_examples=300, deadline=None)
@given(st.tuples(st.integers(0, 9999), st.integers(0, 19), st.integers(0, 39), st.integers(0, 29),
                 st.integers(0, 69), st.integers(0, 69), st.sampled_from(["+", "-"]), st.integers(0, 2999),
                 st.booleans()))
def test_iso_times_padded_or_not_are_read_alike(parts: tuple[int, int, int, int, int, int, str, int, bool]) -> None:
    year, month, day, hour, minute, second, sign, offset, padded = parts
    f = "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}{}{:04d}" if padded else "{}-{}-{} {}:{}:{}{}{:04d}"
    value = f.format(year, month, day, hour, minute, second, sign, offset)
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

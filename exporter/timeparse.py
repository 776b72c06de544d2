"""PMTA timestamps in both forms it writes: `2016-05-29 01:10:51+0200` (iso-times) and epoch seconds; and an RFC 5322
date (`Fri, 24 Feb 2023 10:00:00 +0000`), the form of an ARF report's Arrival-Date, which may time an f record
(`arrivalDate`: pmta-formats.md §1.2, UNCERTAIN).

Records written in the same second share a timeLogged string, so results are cached: the cache
turns most parses on the hot path into one dict lookup. It is cleared when full to stay bounded.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

_CACHE_LIMIT = 65536
_cache: dict[str, float | None] = {}
LATEST = 253402300800.0
"""Year 10000 (what datetime can hold): a time at or past it, before 1970, NaN or infinite is no PMTA time. `float`
takes `nan`, `inf` or `1e308`, and they broke day arithmetic downstream (the correlator's process died on `nan`)."""


MAX_FUTURE = 86_400.0
"""A record time more than this ahead of the clock is not believed: not for the last-record gauge, not as a timeline's
time (the correlator reads such a record as logged when it is read). A PMTA host whose clock ran ahead before NTP
set it wrote such times; kept, a timeline first seen years ahead was never pruned and led every search. A time before
EARLIEST_BELIEVED is not believed either."""
EARLIEST_BELIEVED = 946_684_800.0
"""2000-01-01T00:00:00Z: a record time before it is not believed, exactly as one more than MAX_FUTURE ahead is not
(not for the last-record gauge, not as a timeline's time: the correlator reads such a record as logged when it is
read). No PMTA writes it: a host whose clock was not set yet (before NTP) stamps at or near 1970, and an 8-digit date
(`20160529`) reads as an epoch in 1970. Kept, such a time became the newest record's if the file had no other, and
timed its timeline decades back, where retention deleted it at once, silently, while the metrics counted the record.
Such a time still parses (`parse_pmta_time`): it is no `bad_timestamp`, and a delay between it and a timeQueued from
the same clock is observed, as for a time ahead."""
MAX_QUEUE_AGE = 366 * 86_400.0
"""A timeQueued further than this (a year) from its timeLogged, before or after it, is no time a message spent queued
but a placeholder such as epoch 0 or a broken clock: a `bad_timestamp`, and the record counts without a delay
(observed, one such record put decades into the delay histogram's sum; one decades ahead would have been observed
as 0). Not tighter: PMTA keeps a message until its `bounce-after` (pmta-formats.md §2: message-expired), which a site
may set to weeks, and paused queues hold mail longer; the reference's real 2014 `d` sample (pmta-formats.md §4) was
queued 45 days before it was delivered. A skew of seconds stays a negative delay."""


def _parse(value: str) -> float | None:
    """What PMTA writes only: ASCII digits (epoch, a fraction allowed), an ISO date with a time of day, or an RFC 5322
    date and time (an ARF Arrival-Date, `_rfc5322`). A time without an offset is UTC, as the API reads one: read in
    this host's zone, the same file gave other delays under another TZ. A leap second (`23:59:60`) is the second
    after `:59`, as the metrics' polars reading has it."""
    s = value.strip()
    if not s or not value.isascii() or "_" in s:  # float() also takes `1_000` and digits of other scripts
        return None
    if s.isdigit():
        t = float(s)
    else:
        dt = _iso(s)
        if dt is None:
            whole, dot, fraction = s.partition(".")
            if dot and whole.isdigit() and fraction.isdigit():  # epoch with a fraction (ASCII: checked above), not
                return _in_range(float(s))  # all float() takes (`1.7e9`, `+1767225610`)
            dt = _rfc5322(s)
        if dt is None:
            return None
        t = (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()
    return _in_range(t)


def _in_range(t: float) -> float | None:
    return t if 0.0 <= t < LATEST else None  # NaN fails both tests


PMTA_FORMAT = "%Y-%m-%d %H:%M:%S%z"
"""PMTA's iso-times form, read with strptime when fromisoformat cannot (a field unpadded, `2016-5-29 1:10:51+0200`).
exporter.aggregate.pmta_epoch reads only its padded spelling in polars and leaves every other value to this module."""


def _pmta_form(s: str) -> datetime | None:
    """`s` read with PMTA_FORMAT; its second 60 (a leap second) is the second after :59, as chrono has it."""
    head, leap, tail = s.rpartition(":60")
    try:
        if leap and tail[:1] in ("+", "-"):
            return datetime.strptime(head + ":59" + tail, PMTA_FORMAT) + timedelta(seconds=1)
        return datetime.strptime(s, PMTA_FORMAT)
    except (ValueError, OverflowError):  # OverflowError: the second after 9999-12-31 23:59:59
        return None


def _iso(s: str) -> datetime | None:
    """An ISO date and time of day (a date alone is no record time), or None."""
    leap = len(s) > 18 and s[16] == ":" and s[17:19] == "60"
    try:
        dt = datetime.fromisoformat(s[:17] + "59" + s[19:] if leap else s)
    except ValueError:
        return _pmta_form(s)
    if len(s) <= 10:  # `2016-05-29`, `20160529`: a date without a time
        return None
    try:
        return dt + timedelta(seconds=1) if leap else dt
    except OverflowError:  # `9999-12-31 23:59:60`: raised out of the parser (a record's fold) before
        return None


RFC5322_MAX = 80
"""The longest RFC 5322 date read (`Wed, 24 Sep 2023 10:00:00 +0000 (Coordinated Universal Time)` is 62): a longer
value is no date, and is not handed to the regex or to email.utils."""
_RFC5322 = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),[ \t]*)?[0-9]{1,2}[ \t]+"
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[ \t]+[1-9][0-9]{3}[ \t]+"
    r"[0-9]{2}:[0-9]{2}(?::([0-9]{2}))?[ \t]+"
    r"(?P<zone>[+-](?:[01][0-9]|2[0-3])[0-5][0-9]|UT|UTC|GMT|Z|[ECMP][SD]T)(?:[ \t]*\([ -~]{0,40}\))?",
    re.IGNORECASE)
"""RFC 5322's date-time (§3.3): an optional day name, a four-digit year (email.utils reads `0023` as 2023: no year
before 1000 is taken), seconds optional, a numeric zone (hours 00-23, minutes 00-59) or one of the obsolete names
RFC 5322 defines (§4.3: `Z` is UTC; another military letter, which it says to read as unknown, is no zone here), an
optional comment after it (`(UTC)`, with or without a space before it: not handed to email.utils, which would read a
zone glued to it as none). `-0000` is UTC with no zone known. A day name that is not the date's is not checked (as
email.utils). Used with fullmatch only."""


def _rfc5322(s: str) -> datetime | None:
    """An RFC 5322 date and time (`_RFC5322`), or None; second 60 (a leap second) is the second after :59."""
    m = _RFC5322.fullmatch(s) if len(s) <= RFC5322_MAX else None
    if m is None:
        return None
    leap = m.group(1) == "60"
    s = s[:m.end("zone")]  # the comment off: `+0200(CEST)` was read as no zone, i.e. UTC
    try:
        dt = parsedate_to_datetime(s[:m.start(1)] + "59" + s[m.end(1):] if leap else s)
        return dt + timedelta(seconds=1) if leap else dt
    except (ValueError, TypeError, IndexError, OverflowError):  # a day past the month's end, hour 25, past year 9999
        return None


def parse_pmta_time(value: str) -> float | None:
    """Unix seconds, or None for an empty or unparseable value."""
    try:
        return _cache[value]
    except KeyError:
        pass
    result = _parse(value)
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[value] = result
    return result


def format_pmta_time(ts: float, offset_minutes: int = 0) -> str:
    """The iso-times form PMTA writes (space separator, `+HHMM` offset without colon)."""
    tz = timezone(timedelta(minutes=offset_minutes))
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S%z")

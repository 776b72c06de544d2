"""Simulated time: integer epoch seconds advanced in 1-second ticks, paced against the wall clock.

The model never reads the real clock, so output depends only on (seed, scenario, start time):
`speed` only changes how fast ticks are produced, never what they contain. Formatting helpers
give the two time shapes PMTA writes: accounting `2016-05-29 01:10:51+0200` and the web
monitor's zone-less `2019-02-07 17:06:02`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


def tz_of(offset_minutes: int) -> timezone:
    return timezone(timedelta(minutes=offset_minutes))


def format_acct_time(ts: int, tz: timezone) -> str:
    """iso-times form: local time, space separator, `+HHMM` offset without colon."""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S%z")


def format_monitor_time(ts: float, tz: timezone) -> str:
    """The web monitor's form (timeNow, retryTime, event time): local time, no zone."""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def local_date(ts: int, tz: timezone) -> str:
    """`YYYY-MM-DD` of `ts` in the simulated host's zone (the date part of file names)."""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d")


def seconds_of_day(ts: int, offset_minutes: int) -> int:
    return (ts + offset_minutes * 60) % 86400


class SimClock:
    """Maps real monotonic time to simulated epoch seconds: sim = start + speed * elapsed."""

    def __init__(self, start: int, speed: float = 1.0, monotonic=time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0 (simulated seconds per real second)")
        self.start = start
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> float:
        """Simulated time the wall clock says we should have reached."""
        return self.start + (self._monotonic() - self._t0) * self.speed

    def real_delay_until(self, sim_ts: float) -> float:
        """Real seconds to wait until the simulated clock reaches `sim_ts` (0 if past)."""
        return max(0.0, (sim_ts - self.now()) / self.speed)

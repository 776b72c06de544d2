"""Wall time for retention's cutoff that a forward step of the system clock cannot rush.

Pruning deletes the timelines whose latest event is older than `now - retention`. Taken from `time.time()`, a
clock stepped a day ahead for a few seconds (a VM resumed, a bad NTP source, chrony's `makestep`) deleted a day of
fresh timelines at once, for good, and pruned nothing on the way back. This clock follows the system clock back at
once (pruning then waits) and forward at most `CATCH_UP` times as fast as real time (the monotonic clock): a step
that is corrected within seconds moves the cutoff by seconds; a real correction (the host's clock was behind) is
caught up with in as long as the step was. A step is logged once, with its size.

A new process starts from the retention time the store last recorded (`start`; correlator/store.py
`retention_seed`), not from the system clock: a restart, or the daemon's respawn of the correlator process, under a
clock stepped ahead takes the gap since as a forward step (logged, caught up with at CATCH_UP). A genuine stop is
caught up with in as long as it lasted (docs/reliability.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("watchtower.correlator")

CATCH_UP = 2.0
"""How much faster than real time the clock follows a forward step of the system clock."""
STEP = 60.0
"""Seconds the system clock must jump ahead of real time to be logged as a step."""


class SteadyWallClock:
    """`time.time()`, except that it never runs ahead faster than CATCH_UP x real time (module docstring)."""

    def __init__(self, wall: Callable[[], float] | None = None, monotonic: Callable[[], float] = time.monotonic,
                 start: float | None = None):
        """`start`: the last time trusted before this clock (the store's); a system clock ahead of it is followed
        as a forward step, one behind it at once (as a step back)."""
        self._wall = wall
        self._monotonic = monotonic
        self._at = monotonic()
        now = self._read_wall()
        self._now = now if start is None else min(start, now)
        self._stepped = False
        self._since = ", the time the store last recorded (its retention time or newest record: the daemon was " \
            "stopped that long, or the clock stepped)" if start is not None else ""
        """Said of a step found at the first reading after a `start` (reset at the next reading)."""

    def _read_wall(self) -> float:
        return time.time() if self._wall is None else self._wall()

    def __call__(self) -> float:
        wall, mono = self._read_wall(), self._monotonic()
        elapsed = max(0.0, mono - self._at)
        self._at = mono
        true_run = self._now + elapsed
        since, self._since = self._since, ""
        if wall <= true_run:  # running true (or slewed), or stepped back: follow it
            self._now = wall
            self._stepped = False
            return wall
        if wall - true_run > STEP and not self._stepped:
            if since:  # at a start: most often the daemon was stopped that long, which is no fault (INFO)
                log.info("retention resumes %.0f s behind the system clock%s; pruning catches up at %gx real time, "
                         "so a clock step corrected soon deletes nothing early", wall - true_run, since, CATCH_UP)
            else:
                log.warning("the system clock jumped %.0f s ahead of the time elapsed; retention pruning follows it "
                            "at %gx real time, so a step corrected soon deletes nothing early", wall - true_run,
                            CATCH_UP)
            self._stepped = True
        self._now = min(wall, self._now + CATCH_UP * elapsed)
        return self._now

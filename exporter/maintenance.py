"""When the sinks' housekeeping (retention and size-cap pruning) runs next, for the daemon and the follower.

Pruning is bounded per run (the writer waits meanwhile), so a store that grows faster than one run per
interval can delete would outgrow its size cap: a run that stops with more to delete is followed by the next
one after MAINTAIN_BUSY_INTERVAL, not MAINTAIN_INTERVAL (bench/README.md, ninth round).
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAINTAIN_INTERVAL = 5.0
"""Seconds between runs while each run finishes its work. A run with nothing to delete costs a few index seeks; the
store may outgrow its cap by what is stored meanwhile (~50 MB at 20k records/s; at 30 s it was ~300 MB)."""
MAINTAIN_BUSY_INTERVAL = 1.0
"""Seconds before the next run after one that had more to do: with 1 s runs the writer prunes at most half the
time, and stores the rest."""


class MaintainSchedule:
    """Due every MAINTAIN_INTERVAL, or MAINTAIN_BUSY_INTERVAL after a run that had more to do."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next = clock() + MAINTAIN_INTERVAL

    def due(self) -> bool:
        return self._clock() >= self._next

    def ran(self, more: bool) -> None:
        """A run ended (failed runs count as finished: they are retried after the usual interval)."""
        self._next = self._clock() + (MAINTAIN_BUSY_INTERVAL if more else MAINTAIN_INTERVAL)

"""A label's bounded set of values: the first `cap` distinct values are kept, later ones become `overflow`; so does
a value longer than `MAX_LABEL_VALUE_CHARS`, whatever the cap.

One instance per label is shared by every collector that exposes it (the record series and the queue gauges
both carry `vmta`): a value admitted by one is named by all, so rules that join them on that label match.
"""

from __future__ import annotations

import threading

from exporter.metrics import MAX_LABEL_VALUE_CHARS, PLACEHOLDER_OVERFLOW

__all__ = ["MAX_LABEL_VALUE_CHARS", "LabelCap"]


class LabelCap:
    """Admits label values up to a cap; later values map to `overflow` (bounded cardinality), as do values longer
    than `MAX_LABEL_VALUE_CHARS` (bounded length), which are never admitted.

    The aggregator's merge thread and the event loop's queue poller may admit at once: admission is locked so the
    cap holds exactly; a value already admitted is answered without the lock (the hot path)."""

    def __init__(self, label: str, cap: int) -> None:
        self.label = label
        self.cap = cap
        self.admitted: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self.admitted:
            return value
        if len(value) > MAX_LABEL_VALUE_CHARS:
            return PLACEHOLDER_OVERFLOW
        with self._lock:
            if value in self.admitted or len(self.admitted) < self.cap:
                self.admitted.add(value)
                return value
        return PLACEHOLDER_OVERFLOW

    def readmit(self, value: str) -> None:
        """A value a persisted series already carries (restart): named again whatever the cap."""
        with self._lock:
            self.admitted.add(value)

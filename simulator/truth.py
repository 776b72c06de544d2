"""Ground truth: exact counts of what the simulator wrote, for tests and benchmarks to compare against.

Every record written is counted under a `TruthKey` (type x vmta x pool x isp x domain x sender x
job x bounceCat x reply id x response class). The isp is the simulator's own provider of the
recipient domain (also for an f record whose recipient the provider hid); f/rb/rs/r records keep the
vmta/pool of the delivery they refer to, although those files carry no vmta column. Delivery delays
and bytes are kept per (vmta, pool, isp), the queue size per (vmta, isp) is sampled every simulated
minute.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, NamedTuple


class TruthKey(NamedTuple):
    type: str
    vmta: str
    pool: str
    isp: str
    domain: str
    sender: str
    job: str
    bounce_cat: str
    reply: str
    """Catalogue id of the reply (`gmail.rate_limited_ip`), `fbl.<feedback type>` for f, `rs.<action>` for rs and
    `received` for r records."""
    klass: str
    """Response class the exporter should derive: delivered, throttled, user_unknown, complaint, ...; for rs the DSN
    action (the exporter's `action` label: delayed, delivered), for r `received`."""


class GroundTruth:
    def __init__(self) -> None:
        self.records: Counter[TruthKey] = Counter()
        self.delivered_bytes: Counter[tuple[str, str, str]] = Counter()
        self.delivery_delays: Counter[tuple[str, str, str, int]] = Counter()
        """(vmta, pool, isp, seconds from timeQueued to timeLogged) -> d records."""
        self.queue_samples: list[tuple[int, dict[tuple[str, str], int]]] = []
        """(sim time, {(vmta, isp): recipients queued}) once per simulated minute."""
        self.injected = 0
        self.files: list[str] = []
        self.start = 0
        self.end = 0

    def add(self, key: TruthKey) -> None:
        self.records[key] += 1

    def count(self, **where: str | tuple[str, ...]) -> int:
        """Records whose key matches every filter, e.g. count(type="d", vmta="vmta-03", isp="gmail");
        a tuple value matches any of its members."""
        for k in where:
            if k not in TruthKey._fields:
                raise TypeError(f"unknown truth field {k!r}; fields: {', '.join(TruthKey._fields)}")
        total = 0
        for key, n in self.records.items():
            for k, want in where.items():
                have = getattr(key, k)
                if have != want and not (isinstance(want, tuple) and have in want):
                    break
            else:
                total += n
        return total

    def by(self, *fields: str, **where: str | tuple[str, ...]) -> dict[tuple[str, ...], int]:
        """Counts grouped by `fields`, e.g. by("type", "vmta") -> {("d", "vmta-01"): 1234, ...}."""
        out: Counter[tuple[str, ...]] = Counter()
        for key, n in self.records.items():
            if all(getattr(key, k) == v or (isinstance(v, tuple) and getattr(key, k) in v)
                   for k, v in where.items()):
                out[tuple(getattr(key, f) for f in fields)] += n
        return dict(out)

    def max_queue(self, vmta: str, isp: str) -> int:
        return max((s.get((vmta, isp), 0) for _, s in self.queue_samples), default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`pmta-sim generate --truth FILE` writes this)."""
        return {
            "start": self.start,
            "end": self.end,
            "injected": self.injected,
            "files": self.files,
            "records": [dict(zip(TruthKey._fields, k, strict=True), count=n) for k, n in sorted(self.records.items())],
            "delivered_bytes": [{"vmta": v, "pool": p, "isp": i, "bytes": n}
                                for (v, p, i), n in sorted(self.delivered_bytes.items())],
            "delivery_delays": [{"vmta": v, "pool": p, "isp": i, "seconds": s, "count": n}
                                for (v, p, i, s), n in sorted(self.delivery_delays.items())],
            "queue_samples": [{"time": t, "queues": [{"vmta": v, "isp": i, "recipients": n}
                                                     for (v, i), n in sorted(s.items())]}
                              for t, s in self.queue_samples],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False)

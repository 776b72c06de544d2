"""Injection: who sends what to whom, as recipients arriving at PMTA each simulated second.

A `Stream` is the baseline traffic or one scenario `inject` event: a rate, a sender choice, a
provider mix, a list quality and the VMTA choice (one VMTA, or round-robin over a pool as PMTA does
for a `<virtual-mta-pool>`). Recipient addresses, message ids and sizes are drawn from the model's
seeded random generator, so the stream is reproducible.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from simulator.config import SenderSpec, SimConfig
from simulator.providers import MIXES, PROVIDERS, Provider
from simulator.scenario import InjectEvent, Quality

FIRST = ("anna", "ben", "carla", "david", "emma", "felix", "grace", "henry", "ines", "jack", "kate", "liam",
         "maria", "noah", "olivia", "paul", "rosa", "sam", "tara", "victor")
LAST = ("berg", "chen", "diaz", "evans", "fischer", "garcia", "hughes", "ito", "jones", "khan", "lopez", "moore",
        "nguyen", "olsen", "patel", "quinn", "rossi", "smith", "taylor", "weber")


class Weighted:
    """Draw from weighted choices with one random() and a bisect."""

    def __init__(self, items: list[tuple[object, float]]) -> None:
        items = [(v, w) for v, w in items if w > 0]
        total = sum(w for _, w in items)
        if not items or total <= 0:
            raise ValueError("nothing to choose from")
        self.values = [v for v, _ in items]
        self.cum = list(itertools.accumulate(w / total for _, w in items))
        self.cum[-1] = 1.0

    def pick(self, rng: random.Random) -> object:
        if len(self.values) == 1:
            return self.values[0]
        return self.values[bisect.bisect_right(self.cum, rng.random())]


def mix_of(mix: str | dict[str, float]) -> Weighted:
    shares = MIXES[mix] if isinstance(mix, str) else mix
    return Weighted([(PROVIDERS[name], share) for name, share in shares.items()])


_DOMAINS: dict[str, Weighted] = {name: Weighted(list(p.domains)) for name, p in PROVIDERS.items()}


@dataclass
class Stream:
    rate: float
    senders: Weighted
    mix: Weighted
    quality: Quality
    job: str | None = None
    vmta: str | None = None
    pool: str | None = None
    event: InjectEvent | None = None

    @property
    def thresholds(self) -> tuple[float, float, float]:
        """Cumulative bounds of user_unknown / mailbox_full / content_block on one random draw."""
        q = self.quality
        return q.user_unknown, q.user_unknown + q.mailbox_full, q.user_unknown + q.mailbox_full + q.content_block

    def count(self, rng: random.Random) -> int:
        """Recipients this tick: stochastic rounding keeps the mean exactly `rate`."""
        return int(self.rate + rng.random())


def baseline_stream(config: SimConfig) -> Stream:
    return Stream(config.rate, Weighted([(s, s.weight) for s in config.senders]), mix_of(config.mix), config.quality)


def event_stream(config: SimConfig, event: InjectEvent) -> Stream:
    if event.sender is None:
        senders = Weighted([(s, s.weight) for s in config.senders])
    else:
        known = {s.domain: s for s in config.senders}
        pool = event.pool or next(iter(config.pools))
        sender = known.get(event.sender) or SenderSpec(domain=event.sender, tag=event.sender.split(".")[-2],
                                                       pool=pool)
        senders = Weighted([(sender, 1.0)])
    return Stream(event.rate, senders, mix_of(event.mix or config.mix), event.quality or config.quality,
                  job=event.job, vmta=event.vmta, pool=event.pool, event=event)


def pick_domain(provider: Provider, rng: random.Random) -> str:
    return _DOMAINS[provider.name].pick(rng)  # type: ignore[return-value]


def local_part(rng: random.Random, seq: int) -> str:
    i = int(rng.random() * 400)
    return f"{FIRST[i % 20]}.{LAST[i // 20]}{seq}"

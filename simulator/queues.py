"""The simulated PMTA queue state: recipients pending per queue (`domain/vmta`), modes, connections.

This is what the management API reports, so it is kept exact: a recipient counts in its queue from
injection until its final d/b record. `QueueBook` also keeps the /status traffic windows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from simulator.providers import Mx, Provider

F_USER_UNKNOWN = 1
F_MAILBOX_FULL = 2
F_CONTENT = 4
F_BAD_DOMAIN = 8
MAX_EVENTS_RECORDED = 10
"""Events a queue keeps, newest first: PMTA 5.0's per-domain `max-events-recorded` default, "the last ten" its help
page says (the 4.x sample's five were 4.x's); /status reports 5.0r8."""


class Recipient:
    """One recipient of one message (bulk mail: one recipient per message)."""

    __slots__ = ("seq", "rcpt", "domain", "queue", "sender", "orig", "job", "queued", "size", "msgid", "flags",
                 "attempts", "last_diag", "last_mta", "src_mta")

    def __init__(self, seq: int, rcpt: str, domain: str, queue: Queue, sender: str, orig: str, job: str,
                 queued: int, size: int, msgid: str, flags: int, src_mta: str) -> None:
        self.seq = seq
        self.rcpt = rcpt
        self.domain = domain
        self.queue = queue
        self.sender = sender
        self.orig = orig
        self.job = job
        self.queued = queued
        self.size = size
        self.msgid = msgid
        self.flags = flags
        self.attempts = 0
        self.last_diag = ""
        self.last_mta = ""
        self.src_mta = src_mta


@dataclass(eq=False, slots=True)
class Queue:
    """One PMTA queue: mail for one destination domain through one VirtualMTA."""

    name: str
    domain: str
    vmta: str
    pool: str
    isp: str
    provider: Provider
    mxs: tuple[Mx, ...]
    ready: deque[Recipient] = field(default_factory=deque)
    rcp: int = 0
    bytes: int = 0
    backoff_until: int = 0
    blocked_until: int = 0
    paused: bool = False
    tokens: float = 0.0
    conn: int = 0
    last_attempt: int = 0
    next_retry: int = 0
    events: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS_RECORDED))

    def in_backoff(self, now: int) -> bool:
        return now < self.backoff_until

    def connections(self, now: int) -> int:
        """Connections stay open a few seconds after the last attempt."""
        return self.conn if now - self.last_attempt <= 5 and not self.paused else 0


class Window:
    """Rolling sum over the last `size` ticks, plus the highest value it has had (top/hour, top/min)."""

    __slots__ = ("size", "values", "sum", "top")

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: deque[tuple[int, int, int]] = deque()
        self.sum = [0, 0, 0]
        self.top = [0, 0, 0]

    def push(self, rcp: int, msg: int, nbytes: int) -> None:
        self.values.append((rcp, msg, nbytes))
        self.sum[0] += rcp
        self.sum[1] += msg
        self.sum[2] += nbytes
        if len(self.values) > self.size:
            old = self.values.popleft()
            for i in range(3):
                self.sum[i] -= old[i]
        if self.sum[0] > self.top[0]:
            self.top = list(self.sum)


PROCESSORS = ("bounce", "fbl")
"""The processors /status counts per traffic window: `bounceProcessed` (rb and rs records: DSNs the bounce processor
recognised) and `feedbackLoopProcessed` (f records: ARF reports), pmta-formats.md §1.1, pmta-http-api.md §4.3."""


class Traffic:
    """In/out totals since start and rolling windows, as /status reports them; likewise the messages the bounce and
    feedback-loop processors handled (`processed[kind]`: total; `windows[kind]`: last minute, last hour, in
    `sum[0]`, their highest in `top[0]`)."""

    def __init__(self) -> None:
        self.total_in = [0, 0, 0]
        self.total_out = [0, 0, 0]
        self.tick_in = [0, 0, 0]
        self.tick_out = [0, 0, 0]
        self.windows = {"in": (Window(60), Window(3600)), "out": (Window(60), Window(3600)),
                        **{kind: (Window(60), Window(3600)) for kind in PROCESSORS}}
        self.processed = dict.fromkeys(PROCESSORS, 0)
        self.tick_processed = dict.fromkeys(PROCESSORS, 0)
        self.conn_in = 0

    def received(self, nbytes: int) -> None:
        self.tick_in[0] += 1
        self.tick_in[1] += 1
        self.tick_in[2] += nbytes

    def sent(self, nbytes: int) -> None:
        self.tick_out[0] += 1
        self.tick_out[1] += 1
        self.tick_out[2] += nbytes

    def handled(self, kind: str) -> None:
        """One message through a processor (`bounce`, `fbl`) this tick."""
        self.tick_processed[kind] += 1

    def end_tick(self) -> None:
        for direction, tick, total in (("in", self.tick_in, self.total_in), ("out", self.tick_out, self.total_out)):
            for w in self.windows[direction]:
                w.push(*tick)
            for i in range(3):
                total[i] += tick[i]
        for kind, n in self.tick_processed.items():
            for w in self.windows[kind]:
                w.push(n, n, 0)
            self.processed[kind] += n
            self.tick_processed[kind] = 0
        self.conn_in = min(200, (self.tick_in[0] + 9) // 10)
        self.tick_in = [0, 0, 0]
        self.tick_out = [0, 0, 0]


class QueueBook:
    """Every queue ever used, by name, in creation order (deterministic iteration)."""

    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.traffic = Traffic()

    def get(self, name: str) -> Queue | None:
        return self.queues.get(name)

    def pending(self) -> list[Queue]:
        return [q for q in self.queues.values() if q.rcp > 0]

    def totals(self) -> tuple[int, int, int]:
        """(recipients, domains with recipients, bytes) over all queues."""
        rcp = nbytes = 0
        domains = set()
        for q in self.queues.values():
            if q.rcp:
                rcp += q.rcp
                nbytes += q.bytes
                domains.add(q.domain)
        return rcp, len(domains), nbytes

    def by_vmta_isp(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for q in self.queues.values():
            if q.rcp:
                out[(q.vmta, q.isp)] = out.get((q.vmta, q.isp), 0) + q.rcp
        return out

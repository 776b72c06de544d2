"""The traffic model: one call to `tick(now)` is one simulated second of a PMTA host.

Per tick: evaluate which scenario events are active, inject new recipients, move recipients whose
retry time has come back to their queue, emit FBL/remote-bounce/remote-status records that have arrived, then let
every queue with work attempt up to its rate (normal, or `backoff_rate` in backoff mode). Each
attempt ends in a d, b or t record (or one tq for the whole queue when the failure is on
connect). An injection is an r record when a file takes them. Records go to `emit(row, truth_key)`; the queue
state in `book` is what the API serves.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from datetime import datetime

from simulator.clock import seconds_of_day, tz_of
from simulator.config import SimConfig
from simulator.providers import PROVIDERS, Mx, mx_for
from simulator.queues import F_BAD_DOMAIN, F_CONTENT, F_MAILBOX_FULL, F_USER_UNKNOWN, Queue, QueueBook, Recipient
from simulator.records import (
    Row,
    fbl_record,
    queue_record,
    receipt_record,
    recipient_record,
    remote_bounce_record,
    remote_status_record,
)
from simulator.replies import CATALOGUE, REMOTE_BOUNCE, Reply, dsn_status
from simulator.scenario import ComplaintEvent, InjectEvent, PauseEvent, ReplyEvent, Scenario
from simulator.traffic import Stream, Weighted, baseline_stream, event_stream, local_part, pick_domain
from simulator.truth import TruthKey

Emit = Callable[[Row, TruthKey], None]

_EXPIRED = CATALOGUE["pmta.expired"]
_NO_SUCH_DOMAIN = CATALOGUE["pmta.no_such_domain"]
NO_MX_REPLIES = frozenset({"pmta.dns_failed"})
"""Failures before any MX was resolved: no dsnMta or destination address in the record, no host in the event."""
_DEAD = Weighted([(d, 1.0) for d in PROVIDERS["other"].dead_domains])
_TRANSIENT = {name: Weighted([(CATALOGUE[r], w) for r, w in p.transient_replies]) for name, p in PROVIDERS.items()}
_RS_DELIVERED = 0.2
"""Share of rs records that report a success (a DSN asked for with NOTIFY=SUCCESS); the rest report a delay."""
_RS = {"delayed": (dsn_status("4.4.1"), "smtp;451 4.4.1 mailbox server not responding, will retry"),
       "delivered": (dsn_status("2.0.0"), "smtp;250 2.0.0 Ok: delivered to mailbox")}


class TrafficModel:
    def __init__(self, config: SimConfig, scenario: Scenario, start: int, emit: Emit) -> None:
        self.config = config
        self.scenario = scenario
        self.start = start
        self.emit = emit
        self.rng = random.Random(config.seed)
        self.side = random.Random(f"side-{config.seed}")
        """Draws for what was added after the traffic model (rs records, hidden FBL recipients): a stream of their own,
        so the main one, hence every scenario's traffic and files, stays what it was."""
        self._routes = frozenset(t for f in config.files for t in f.records)
        """Record types some file takes: r and rs are made only then (r is one record per message)."""
        self.tz = tz_of(config.utc_offset_minutes)
        self.book = QueueBook()
        self.pool_of = config.pool_of()
        self.ips = {v: config.vmta_ip(v) for v in config.vmtas}
        self.now = start
        self.injected = 0
        self._seq = 0
        self._late_seq = 0
        self._due: list[tuple[int, int, Recipient]] = []
        self._late: list[tuple[int, int, str, Recipient, str]] = []
        self._active: dict[Queue, None] = {}
        self._rr = {pool: 0 for pool in config.pools}
        self._match_cache: dict[tuple[int, str, str, str], bool] = {}
        self._baseline = baseline_stream(config)
        self._factor = dict(config.vmta_rate_factor)
        self._src = {s.domain: f"{s.tag}-app.example (10.20.0.{11 + i})" for i, s in enumerate(config.senders)}
        events = list(scenario.events)
        self._events = events
        self._streams = {i: event_stream(config, e) for i, e in enumerate(events) if isinstance(e, InjectEvent)}
        self._rcpt_events: list[tuple[int, ReplyEvent]] = []
        self._queue_events: list[tuple[int, ReplyEvent]] = []
        self._complaint_events: list[tuple[int, ComplaintEvent]] = []
        self._pause_events: list[tuple[int, PauseEvent]] = []
        self._hour = -1
        self._job_suffix = ""
        q = config.queue
        self._retry = [int(x) for x in q.retry]
        self._to_normal = int(q.backoff_to_normal_after)
        self._bounce_after = int(q.bounce_after)
        self._connect_retry = int(q.connect_retry)

    # --- one simulated second ------------------------------------------------------------------
    def tick(self, now: int) -> None:
        self.now = now
        rel = now - self.start
        sod = seconds_of_day(now, self.config.utc_offset_minutes)
        self._activate(rel, sod)
        hour = (now + self.config.utc_offset_minutes * 60) // 3600
        if hour != self._hour:
            self._hour = hour
            self._job_suffix = datetime.fromtimestamp(now, self.tz).strftime("%m%d-%H")
        self._inject(self._baseline, now)
        for stream in self._streams.values():
            if stream.event is not None and stream.event.active(rel, sod):
                self._inject(stream, now)
        due = self._due
        while due and due[0][0] <= now:
            r = heapq.heappop(due)[2]
            r.queue.ready.append(r)
            self._active[r.queue] = None
        late = self._late
        while late and late[0][0] <= now:
            _, _, kind, r, extra = heapq.heappop(late)
            self._late_record(kind, r, extra, now)
        for q in list(self._active):
            self._work(q, now, rel)
        self.book.traffic.end_tick()

    def _activate(self, rel: float, sod: int) -> None:
        rcpt, queue, complaints, pauses = [], [], [], []
        for i, e in enumerate(self._events):
            if not e.active(rel, sod):
                continue
            if isinstance(e, ReplyEvent):
                (queue if e.level == "queue" else rcpt).append((i, e))
            elif isinstance(e, ComplaintEvent):
                complaints.append((i, e))
            elif isinstance(e, PauseEvent):
                pauses.append((i, e))
        self._rcpt_events, self._queue_events, self._complaint_events = rcpt, queue, complaints
        if pauses != self._pause_events:
            self._pause_events = pauses
            for q in self.book.queues.values():
                q.paused = self._paused(q)

    def _matches(self, i: int, q: Queue, sender: str = "", job: str = "") -> bool:
        key = (i, q.name, sender, job)
        hit = self._match_cache.get(key)
        if hit is None:
            if len(self._match_cache) > 500_000:
                self._match_cache.clear()
            m = self._events[i].match
            about_messages = m.sender is not None or m.job is not None  # needs a recipient to decide
            hit = (bool(sender) or not about_messages) and m.matches(
                vmta=q.vmta, pool=q.pool, isp=q.isp, domain=q.domain, sender=sender, job=job)
            self._match_cache[key] = hit
        return hit

    def _paused(self, q: Queue) -> bool:
        return any(self._matches(i, q) for i, _ in self._pause_events)

    # --- injection -----------------------------------------------------------------------------
    def _inject(self, stream: Stream, now: int) -> None:
        n = stream.count(self.rng)
        if not n:
            return
        rng_random = self.rng.random
        cfg = self.config
        pick_sender, pick_provider = stream.senders.pick, stream.mix.pick
        q_bad, q_user, q_full, q_content = stream.quality.bad_domain, *stream.thresholds
        lo, span = cfg.message_kb[0] * 1024, (cfg.message_kb[1] - cfg.message_kb[0] + 1) * 1024
        d0, d1 = cfg.queue.first_attempt_delay
        dspan = d1 - d0 + 1
        traffic, due, rr, pools = self.book.traffic, self._due, self._rr, cfg.pools
        receipts = "r" in self._routes
        for _ in range(n):
            sender = pick_sender(self.rng)
            provider = pick_provider(self.rng)
            flags = 0
            if q_bad and rng_random() < q_bad:
                provider, domain, flags = PROVIDERS["other"], _DEAD.pick(self.rng), F_BAD_DOMAIN
            else:
                domain = pick_domain(provider, self.rng)  # type: ignore[arg-type]
                x = rng_random()
                if x < q_content:
                    flags = F_USER_UNKNOWN if x < q_user else (F_MAILBOX_FULL if x < q_full else F_CONTENT)
            if stream.vmta:
                vmta = stream.vmta
            else:
                pool = stream.pool or sender.pool  # type: ignore[attr-defined]
                members = pools[pool]
                vmta = members[rr[pool] % len(members)]
                rr[pool] += 1
            q = self._queue(domain, vmta, provider.name)  # type: ignore[attr-defined]
            seq = self._seq
            self._seq = seq + 1
            size = int(lo + rng_random() * span)
            tag, sdomain = sender.tag, sender.domain  # type: ignore[attr-defined]
            r = Recipient(seq, f"{local_part(self.rng, seq)}@{domain}", domain, q, sdomain, f"bounces@{sdomain}",
                          stream.job or f"{tag}-{self._job_suffix}", now, size, f"<{now:x}.{seq:07x}@{sdomain}>",
                          flags, self._src.get(sdomain) or f"{tag}-app.example (10.20.1.11)")
            q.rcp += 1
            q.bytes += size
            traffic.received(size)
            if receipts:
                self._receipt(r, tag, now)
            heapq.heappush(due, (now + d0 + int(rng_random() * dspan), seq, r))
        self.injected += n

    def _queue(self, domain: str, vmta: str, isp: str) -> Queue:
        name = f"{domain}/{vmta}"
        q = self.book.queues.get(name)
        if q is None:
            provider = PROVIDERS[isp]
            q = Queue(name, domain, vmta, self.pool_of[vmta], isp, provider, mx_for(provider, domain))
            self.book.queues[name] = q
            q.paused = self._paused(q)
        return q

    # --- delivery attempts ---------------------------------------------------------------------
    def _work(self, q: Queue, now: int, rel: int) -> None:
        if q.paused or now < q.blocked_until:
            return
        backoff = now < q.backoff_until
        rate = (self.config.queue.backoff_rate if backoff else q.provider.max_rate) * self._factor.get(q.vmta, 1.0)
        q.tokens = min(q.tokens + rate, max(rate, 1.0))
        n = min(int(q.tokens), len(q.ready))
        if n == 0:
            return
        if self._queue_events and self._connect_fails(q, now, rel):
            return
        q.tokens -= n
        for _ in range(n):
            self._attempt(q.ready.popleft(), q, now, rel)
        q.conn = 1 if backoff else min(q.provider.max_conn, 1 + n // 4)
        q.last_attempt = now
        if not q.ready:
            del self._active[q]

    def _connect_fails(self, q: Queue, now: int, rel: int) -> bool:
        for i, ev in self._queue_events:
            if self._matches(i, q) and self.rng.random() < ev.chance(rel):
                reply = CATALOGUE[ev.reply]
                # A failed DNS lookup resolved no MX: PMTA has no host or address to write (pmta-formats.md §4.1)
                mx = None if reply.id in NO_MX_REPLIES else q.mxs[0]
                diag = reply.render_diag(self._ctx(q, None, mx))
                self._emit(queue_record(now, q, reply, diag, mx, self.ips[q.vmta]), q, None, reply)
                self._deferred(q, now, reply, diag, mx)
                q.blocked_until = q.next_retry = now + self._connect_retry
                q.conn = 0
                return True
        return False

    def _attempt(self, r: Recipient, q: Queue, now: int, rel: int) -> None:
        ip = self.ips[q.vmta]
        if now - r.queued >= self._bounce_after:
            row = recipient_record("b", now, r, _EXPIRED, r.last_diag, None, ip)
            row["dsnMta"] = r.last_mta
            self._final(row, q, r, _EXPIRED)
            return
        r.attempts += 1
        if r.flags & F_BAD_DOMAIN:
            self._final(recipient_record("b", now, r, _NO_SUCH_DOMAIN, "", None, ip), q, r, _NO_SUCH_DOMAIN)
            return
        reply = self._decide(r, q, rel)
        mxs = q.mxs
        mx = mxs[0] if len(mxs) == 1 else mxs[int(self.rng.random() * len(mxs))]
        diag = reply.render_diag(self._ctx(q, r, mx))
        if reply.success:
            self._final(recipient_record("d", now, r, reply, diag, mx, ip), q, r, reply)
            self.book.traffic.sent(r.size)
            self._after_delivery(r, q, now, rel)
        elif reply.permanent:
            self._final(recipient_record("b", now, r, reply, diag, mx, ip), q, r, reply)
        else:
            self._emit(recipient_record("t", now, r, reply, diag, mx, ip), q, r, reply)
            r.last_diag, r.last_mta = diag, mx.dsn_mta
            retry = now + self._retry[min(r.attempts, len(self._retry)) - 1]
            heapq.heappush(self._due, (retry, r.seq, r))
            self._deferred(q, now, reply, diag, mx)
            q.next_retry = retry if q.next_retry <= now else min(q.next_retry, retry)

    def _decide(self, r: Recipient, q: Queue, rel: int) -> Reply:
        rng = self.rng
        for i, ev in self._rcpt_events:
            if self._matches(i, q, r.sender, r.job) and rng.random() < ev.chance(rel):
                return CATALOGUE[ev.reply]
        p = q.provider
        if r.flags:
            if r.flags & F_USER_UNKNOWN:
                return CATALOGUE[p.user_unknown]
            if r.flags & F_CONTENT:
                return CATALOGUE[p.content_block]
            if r.flags & F_MAILBOX_FULL and rng.random() < 0.85:
                return CATALOGUE[p.mailbox_full]
        if rng.random() < p.transient:
            return _TRANSIENT[p.name].pick(rng)  # type: ignore[return-value]
        return CATALOGUE[p.ok]

    def _deferred(self, q: Queue, now: int, reply: Reply, diag: str, mx: Mx | None) -> None:
        """A queue's recent events as PMTA words them (pmta-http-api.md §5.2): the reply with where it was
        connected (a DNS failure connected nowhere: its text alone), and the rate-limit notice of a queue put in
        backoff."""
        ip = self.ips[q.vmta]
        q.events.appendleft((now, diag.removeprefix("smtp;") if mx is None else
                             f'Error: "{diag.removeprefix("smtp;")}" while connected from '
                             f"mailout-{q.vmta}.example.net ({ip}) to {mx.dsn_mta}"))
        if reply.backoff:
            q.backoff_until = now + self._to_normal
            q.events.appendleft((now, "message rate limit reached (based on queue's backoff-max-msg-rate in "
                                      "configuration)"))

    def _after_delivery(self, r: Recipient, q: Queue, now: int, rel: int) -> None:
        p = q.provider
        rng = self.rng
        if p.fbl:
            chance, ftype = self.config.complaint_rate, "abuse"
            for i, ev in self._complaint_events:
                if self._matches(i, q, r.sender, r.job):
                    chance, ftype = ev.chance(rel), ev.feedback_type
                    break
            if rng.random() < chance:
                lo, hi = self.config.fbl_delay
                self._later(now + rng.randint(int(lo), int(hi)), "f", r, ftype)
        elif p.remote_bounce and rng.random() < p.remote_bounce * self.config.remote_bounce_scale:
            lo, hi = self.config.rb_delay
            self._later(now + rng.randint(int(lo), int(hi)), "rb", r, "")
        if p.remote_status and "rs" in self._routes and \
                self.side.random() < p.remote_status * self.config.remote_bounce_scale:
            lo, hi = self.config.rb_delay
            self._later(now + self.side.randint(int(lo), int(hi)), "rs", r, "")

    def _later(self, when: int, kind: str, r: Recipient, extra: str) -> None:
        self._late_seq += 1
        heapq.heappush(self._late, (when, self._late_seq, kind, r, extra))

    def _late_record(self, kind: str, r: Recipient, extra: str, now: int) -> None:
        q = r.queue
        self.book.traffic.handled("fbl" if kind == "f" else "bounce")  # /status bounceProcessed, feedbackLoopProcessed
        if kind == "f":
            hidden = q.provider.fbl_hidden_rcpt
            hide = bool(hidden) and self.side.random() < hidden
            key = TruthKey("f", q.vmta, q.pool, q.isp, r.domain, r.sender, r.job, "", f"fbl.{extra}", "complaint")
            self.emit(fbl_record(now, r, extra, self.ips[q.vmta], hide), key)
        elif kind == "rs":
            action = "delivered" if self.side.random() < _RS_DELIVERED else "delayed"
            key = TruthKey("rs", q.vmta, q.pool, q.isp, r.domain, r.sender, r.job, "", f"rs.{action}", action)
            self.emit(remote_status_record(now, r, action, *_RS[action]), key)
        else:
            diag = REMOTE_BOUNCE.render_diag(self._ctx(q, r, q.mxs[0]))
            key = TruthKey("rb", q.vmta, q.pool, q.isp, r.domain, r.sender, r.job, REMOTE_BOUNCE.bounce_cat,
                           REMOTE_BOUNCE.id, REMOTE_BOUNCE.klass)
            self.emit(remote_bounce_record(now, r, REMOTE_BOUNCE, diag), key)

    def _receipt(self, r: Recipient, tag: str, now: int) -> None:
        """r: the injector handed PMTA the message (counted under the VMTA it is queued for; the file has no vmta)."""
        q = r.queue
        key = TruthKey("r", q.vmta, q.pool, q.isp, r.domain, r.sender, r.job, "", "received", "received")
        self.emit(receipt_record(now, r, tag), key)

    # --- helpers -------------------------------------------------------------------------------
    def _ctx(self, q: Queue, r: Recipient | None, mx: object) -> dict[str, str]:
        bits = self.rng.getrandbits(64)
        return {"ip": self.ips[q.vmta], "rcpt": r.rcpt if r else "", "domain": q.domain,
                "sender": r.sender if r else "", "mx": getattr(mx, "host", ""), "mxip": getattr(mx, "ip", ""),
                "id": f"{bits & 0xFFFFFFFFFF:010x}",
                "gid": f"{chr(97 + bits % 26)}{bits >> 8 & 0xFFF}si{bits >> 20 & 0xFFFFFFF}"
                       f"{chr(97 + (bits >> 48) % 26)}{chr(97 + (bits >> 53) % 26)}x.{bits >> 58}"}

    def _emit(self, row: Row, q: Queue, r: Recipient | None, reply: Reply) -> None:
        typ = row["type"]
        cat = row.get("bounceCat", "") if typ in ("b", "d") else ""
        key = TruthKey(typ, q.vmta, q.pool, q.isp, q.domain, r.sender if r else "", r.job if r else "", cat,
                       reply.id, reply.klass)
        self.emit(row, key)

    def _final(self, row: Row, q: Queue, r: Recipient, reply: Reply) -> None:
        self._emit(row, q, r, reply)
        q.rcp -= 1
        q.bytes -= r.size

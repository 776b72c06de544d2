"""Queue gauges from PMTA's management API: a poller task plus a custom collector over its last poll.

Each poll reads /status (host totals) and the queue list. PMTA lists only its top N queues
(`http-default-max-items`, default 10), so with `per_vmta_queries` the poller also asks /vmtas and
then `/queues?queue=*/<vmta>` for every VMTA it knows (listed by /vmtas - itself a top-N list -,
present in the top-N queue list, or seen with mail in the last polls), a few at a time. Queues
(`domain/vmta`) are summed to (vmta, isp): the domain itself never becomes a label. A VMTA's own
listing is top-N as well; the recipients of its queues not shown (its `totalRcp` less those shown)
are `pmta_queue_unlisted_recipients{vmta}`, so a VMTA's whole backlog is known. What a `queue=` filter does to
`totalRcp` is UNCERTAIN (pmta-http-api.md §5.3 says "recipients in all queues"): both meanings are read
(`unlisted_recipients`), and the unlisted never exceed the host's recipients less those listed.
`watchtower_pmta_queue_coverage_ratio` says how much of /status's total the per-queue gauges saw.

The collector serves exactly what the last poll read, and nothing older (the Prometheus
convention: absent, not stale), except that a (vmta, isp) cell gone from its VMTA's listing read whole (no
recipient left unlisted), or a VMTA's unlisted recipients gone, is served as 0 for `VANISHED_AS_ZERO` (panels
and alerts bridge failed polls with last_over_time, which would otherwise count an emptied queue at its last
value; a cell that only left a top-N listing stays absent: it is not known empty):
- one deadline (`pmta.poll_deadline`) bounds the whole poll; a request still running or not yet
  started when it passes is cancelled and counted as a `timeout`, like every failed request is
  counted by reason;
- a VMTA whose own query failed has no `pmta_queue_*` series at all (not even from the top-N list,
  which would be a partial sum), nor has a label it shares with VMTAs that answered (`overflow` past
  labels.max_vmtas, `none`): that too would be a partial sum; the /status gauges exist only when /status was read;
- `watchtower_pmta_api_up` is 1 when the poll read anything, `watchtower_pmta_api_partial` is 1 when
  it was up but some request failed; both come from the same snapshot as the gauges, so they can
  never disagree with them. A snapshot older than `STALE_POLLS` x (interval + deadline) means the
  poller is stuck: then nothing but `up 0` is served.

Whatever PMTA answers, `run()` never raises: errors are counted, polls that read nothing back off
exponentially up to `max_backoff`, and even a bug only costs one poll.

Large answers are parsed, and every poll's queues summed, on the poller's own worker thread, one job at a time: never
in asyncio's default pool, where /metrics is formatted (seven 16 MiB parses at once filled it and a scrape waited
12 s), nor on the event loop. A parse still waiting for that worker when its poll's deadline passes is dropped
unstarted; one under way cannot be stopped, but pmta_api bounds its work (MAX_ELEMENTS, MAX_QUEUES).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.config import PmtaApiConfig
from exporter.labelcap import LabelCap
from exporter.metrics import (
    MAX_LABEL_VALUE_CHARS,
    PLACEHOLDER_NONE,
    PLACEHOLDER_OTHER,
    PLACEHOLDER_OVERFLOW,
    SPECS,
    named_self_metrics,
)
from exporter.pmta_api import (
    API_ERROR_REASONS,
    PmtaApiClient,
    PmtaApiConfigError,
    PmtaApiError,
    QueueInfo,
    QueueList,
    QueueTotals,
    StatusInfo,
    VmtaInfo,
)
from exporter.redact import cut_point

log = logging.getLogger("watchtower.queues")
_N = TypeVar("_N", int, float)
_T = TypeVar("_T")

MAX_VMTA_LABELS = 2000
"""`labels.max_vmtas`' default (a poller without the aggregator's cap); at least this many VMTAs are queried
whatever the cap (those past it are summed under `overflow`)."""
STALE_POLLS = 2
"""A snapshot older than this many (poll_interval + poll_deadline) is not served: the poller is stuck."""
VMTA_FORGET_POLLS = 3
"""A VMTA missing from /vmtas is still queried for this many polls (/vmtas is itself a top-N list)."""
CONCURRENCY = 4
"""Per-VMTA queries in flight at once (PMTA's web monitor is a small server; so is our pool of 8)."""
LOG_VMTAS = 10
LOG_NAME_CHARS = 64
"""A VMTA name quoted in a log line is cut after this many characters (PMTA's names are short; a hostile one of
60 KB, ten to a line, made 2 MB WARNING lines)."""
LOG_TEXT_CHARS = 300
"""The same for an error message quoted in a log line (it may quote what the peer sent)."""
STATUS_TYPES = ("smtp", "pipe", "discard", "file", "alias", "bounceProcessor", "feedbackLoopProcessor", "gmImprinter")
"""PMTA's delivery types in /status (pmta-http-api.md): always named on pmta_status_* series."""
MAX_STATUS_TYPES = 32
"""Distinct `type` values of the pmta_status_* series, `STATUS_TYPES` included; later ones are summed as `overflow`
(PMTA has 8: 20,000 in one answer were 20,001 series)."""
VANISHED_AS_ZERO = 600.0
"""Seconds a (vmta, isp) queue cell, or a VMTA's unlisted recipients, gone from a complete read is served as 0
before it is dropped. Panels and alerts read these gauges through last_over_time(...[5m]) so that one failed poll
does not drop a queue; a cell that vanished would be counted at its last value for those 5 minutes (its recipients
delivered, or moved into pmta_queue_unlisted_recipients: counted twice). 10 minutes cover the window and a scrape."""
GLOBAL_SUM = 1.5
"""The VMTA listings' totalRcp summing to more than this many host totals are whole-host totals (`totals_are_global`):
filtered ones count disjoint queues, so they sum to the host total at most (plus what arrived between requests)."""

QUEUE_METRICS = ("pmta_queue_recipients", "pmta_queue_bytes", "pmta_queue_connections", "pmta_queue_backoff",
                 "pmta_queue_paused", "pmta_queue_paused_recipients")
"""The (vmta, isp) gauges, in the order of a `Snapshot.queues` row."""
SERVED_SELF_METRICS = ("watchtower_pmta_api_up", "watchtower_pmta_api_partial", "watchtower_pmta_queue_coverage_ratio")
"""Self metrics the collector derives from the snapshot (so they always match the gauges served)."""


@dataclass
class Snapshot:
    """What one poll read, already aggregated to label values; the collector serves exactly this."""

    taken: float
    up: bool = False
    partial: bool = False
    queues: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(vmta, isp) -> [recipients, bytes, connections, queues in backoff, queues paused, recipients in paused
    queues] (`QUEUE_METRICS`)."""
    unlisted: dict[str, float] = field(default_factory=dict)
    """vmta -> recipients in its queues beyond its own top-N listing (its total less the queues shown:
    unlisted_recipients)."""
    status: StatusInfo | None = None
    coverage: float | None = None


@dataclass
class _Poll:
    """The requests of one poll: key -> outcome (None while running, "ok" or an error reason), and results."""

    outcomes: dict[str, str | None] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    uncounted: dict[str, str] = field(default_factory=dict)
    """VMTA -> the first of its queues the answers gave no recipient count (`QueuePoller._uncounted`); a VMTA whose
    own query failed is not among them (it is unread already)."""
    first_error: dict[str, str] = field(default_factory=dict)
    """Error reason -> the message of its first request that failed so (a 403's hint, a certificate error)."""
    over: threading.Event = field(default_factory=threading.Event)
    """Set when the poll's requests are over (answered, or cut off by the deadline): a parse not started by then
    is not started at all (`_unless_over`)."""

    def failed(self) -> dict[str, str]:
        return {k: o or "timeout" for k, o in self.outcomes.items() if o != "ok"}

    def vmta_results(self) -> dict[str, QueueList]:
        """VMTA -> its own listing (`*/<vmta>`), for the VMTAs whose query answered."""
        return {k.removeprefix("vmta:"): r for k, r in self.results.items() if k.startswith("vmta:")}


class QueueCollector:
    """client_python custom collector: GaugeMetricFamily per row of the metric table, from the last snapshot."""

    def __init__(self, poller: QueuePoller) -> None:
        self.poller = poller

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.poller.fresh())

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily:
        spec = SPECS[name]
        return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))

    def _families(self, snap: Snapshot | None) -> list[Metric]:
        fams = [self._family(n) for n in QUEUE_METRICS]
        for (vmta, isp), values in sorted((snap.queues if snap else {}).items()):
            for fam, value in zip(fams, values, strict=True):
                _add(fam, [vmta, isp], value)
        unlisted = self._family("pmta_queue_unlisted_recipients")
        for vmta, value in sorted((snap.unlisted if snap else {}).items()):
            _add(unlisted, [vmta], value)
        rcp, dom, kb = (self._family(n) for n in ("pmta_status_queue_recipients", "pmta_status_queue_domains",
                                                  "pmta_status_queue_bytes"))
        conn, spool = self._family("pmta_status_connections"), self._family("pmta_status_spool_files")
        status = snap.status if snap else None
        if status is not None:
            for qtype, totals in sorted(status.queue.items()):  # a field PMTA gave no number for: no series
                _add(rcp, [qtype], totals.rcp)
                _add(dom, [qtype], totals.dom)
                _add(kb, [qtype], _bytes(totals.kb))
            for direction, value in (("in", status.conn_in), ("out", status.conn_out)):
                _add(conn, [direction], value)
            _add(spool, [], status.spool_files)
        up, partial, coverage = (self._family(n) for n in SERVED_SELF_METRICS)
        up.add_metric([], 1 if snap is not None and snap.up else 0)
        partial.add_metric([], 1 if snap is not None and snap.partial else 0)
        if snap is not None:
            _add(coverage, [], snap.coverage)
        return [*fams, unlisted, rcp, dom, kb, conn, spool, up, partial, coverage]


def _add(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    """One sample, unless there is no value or it is not finite: a scrape never fails on a number (round() of an
    infinite one raised, and /metrics answered 500 for every family, the file-tailing ones too)."""
    if value is not None and math.isfinite(value):
        family.add_metric(labels, value)


def _bytes(kb: float | None) -> float | None:
    """PMTA's kb as bytes (whole), None when there is no finite number of them."""
    number = None if kb is None else kb * 1024
    return float(round(number)) if number is not None and math.isfinite(number) else None


class QueuePoller:
    """Polls PMTA every `poll_interval`; `await run()` until cancelled."""

    def __init__(self, config: PmtaApiConfig, registry: CollectorRegistry, isp_of_domain: Callable[[str], str],
                 *, vmta_cap: LabelCap | None = None, transport: object | None = None,
                 deferring_vmtas: Callable[[], Iterable[str]] | None = None) -> None:
        self.config = config
        self.deferring_vmtas = deferring_vmtas
        """The VMTAs the records deferred since the last poll (`RecordAggregator.take_deferring_vmtas`): asked for by
        name, as PMTA's own lists are top N and leave out a VMTA with a small backlog."""
        self.vmta_cap = vmta_cap or LabelCap("vmta", MAX_VMTA_LABELS)
        """`labels.max_vmtas`, shared with the record series (`RecordAggregator.vmta_cap`): rules join on `vmta`."""
        self._max_queried = max(self.vmta_cap.cap, MAX_VMTA_LABELS)
        self.type_cap = LabelCap("type", MAX_STATUS_TYPES)
        """The `type` label of the pmta_status_* series: PMTA's own types always, then the first others seen."""
        for qtype in STATUS_TYPES:
            self.type_cap.readmit(qtype)
        self.deadline = config.poll_deadline
        self.isp_of_domain = isp_of_domain
        self._transport = transport
        m = named_self_metrics(registry, ("watchtower_pmta_api_poll_duration_seconds",
                                          "watchtower_pmta_api_errors_total"))
        self.duration = m["watchtower_pmta_api_poll_duration_seconds"]
        self.errors = m["watchtower_pmta_api_errors_total"]
        for reason in API_ERROR_REASONS:
            self.errors.labels(reason)
        self.snapshot: Snapshot | None = None
        self.failures = 0
        self.polls = 0
        """Polls completed (whatever their outcome)."""
        self._vmtas: dict[str, int] = {}
        """VMTA -> polls since it was last listed by /vmtas or seen with queued mail."""
        self._read_at: dict[str, int] = {}
        """VMTA -> the poll that last had an answer to its own listing (or an error: it was not cut off)."""
        self._cells_at: dict[tuple[str, str], float] = {}
        """(vmta, isp) -> when a read last gave it (monotonic): gone from a complete read, it is served as 0."""
        self._unlisted_at: dict[str, float] = {}
        self._state: tuple[bool, bool, str, str] | None = None
        self._global_totals: bool | None = None
        """Whether the last poll read the per-VMTA listings' totalRcp as whole-host totals (logged when it changes)."""
        self._bug: str | None = None
        """The last unexpected error logged with its traceback: a bug that repeats every poll is logged once."""
        self._executor: ThreadPoolExecutor | None = None
        """The poller's own worker thread (`_worker`): parses of large answers and the sum of each poll's queues."""
        registry.register(QueueCollector(self))

    def reload_isp(self, isp_of_domain: Callable[[str], str]) -> None:
        """SIGHUP: classify with the new ISP table from the next poll on."""
        self.isp_of_domain = isp_of_domain

    # --- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        client: PmtaApiClient | None = None
        try:
            while True:
                ok = False
                try:
                    if client is None:
                        client = PmtaApiClient(self.config, transport=self._transport)  # type: ignore[arg-type]
                    ok = await self.poll_once(client)
                except asyncio.CancelledError:
                    raise
                except PmtaApiConfigError as exc:  # a pmta.* setting the client cannot use: the operator's, not a bug
                    self.errors.labels(exc.reason).inc()
                    self._down(str(exc), setting=str(exc))
                except PmtaApiError as exc:
                    self.errors.labels(exc.reason).inc()
                    self._down(_clip(str(exc), LOG_TEXT_CHARS), cause=exc.reason)
                except Exception as exc:  # noqa: BLE001 - a bug must not kill the poller (or the daemon)
                    self._log_bug("PMTA API poll failed unexpectedly", exc)
                    self._down("unexpected error", cause="bug")
                await asyncio.sleep(self.next_delay(ok))
        finally:
            self.close()
            if client is not None:
                await asyncio.shield(client.aclose())

    def _worker(self) -> ThreadPoolExecutor:
        """The poller's one worker thread, started at first use (again after `close`)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="watchtower-pmta-api")
        return self._executor

    def close(self, wait: bool = False) -> None:
        """Stops the worker thread (`run` does as it ends): work not started is dropped; a parse under way ends on its
        own (pmta_api bounds it) and its answer is dropped. `wait`: return once it has ended."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    async def _in_worker(self, work: Callable[..., _T], *args: Any) -> _T:
        """`work(*args)` on the poller's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._worker(), work, *args)

    def _down(self, why: str, setting: str = "", cause: str = "") -> None:
        """Nothing read this poll. `setting`: the message of an unusable pmta.* setting (logged once, and again
        only when it changes: another key, or the same key failing another way); `cause`: the failure's class (logged
        again when it changes)."""
        self.snapshot = Snapshot(time.monotonic())
        self.polls += 1
        self._log_state(False, False, why, setting, cause)

    def _log_bug(self, what: str, exc: BaseException) -> None:
        """What the client cannot explain is a bug: its traceback is worth logging, once while it repeats (a
        poll every few seconds would otherwise fill the log with the same traceback)."""
        text = _clip(f"{type(exc).__name__}: {exc}", LOG_TEXT_CHARS)
        if text == self._bug:
            log.debug("%s (a bug, again): %s", what, text)
            return
        self._bug = text
        log.error("%s (a bug): %s", what, text, exc_info=exc)

    def next_delay(self, ok: bool) -> float:
        interval = self.config.poll_interval
        if ok:
            self.failures = 0
            return interval
        self.failures += 1
        doublings = min(self.failures - 1, 32)  # capped before the power: 2.0 * 2**1024 overflows (~3.5 days at 300 s)
        return max(interval, min(self.config.max_backoff, interval * 2**doublings))

    def max_age(self) -> float:
        return STALE_POLLS * (max(self.config.poll_interval, 1.0) + self.deadline)

    def fresh(self) -> Snapshot | None:
        snap = self.snapshot
        if snap is None or time.monotonic() - snap.taken > self.max_age():
            return None
        return snap

    # --- one poll --------------------------------------------------------------------------------
    async def poll_once(self, client: PmtaApiClient) -> bool:
        """One poll, bounded by `pmta.poll_deadline`; replaces the snapshot. True when anything was read. The secret
        files are read again first (PmtaApiConfigError when unreadable): a rotated key is used at once."""
        client.refresh_secrets()
        t0 = time.monotonic()
        poll = _Poll()
        try:
            async with asyncio.timeout(self.deadline or None):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._call(poll, "status", lambda: client.status(offload=self._offload(poll))))
                    tg.create_task(self._read_queues(client, poll))
        except TimeoutError:
            pass  # what is unfinished is counted below
        finally:
            poll.over.set()  # a parse still waiting for the worker is dropped unstarted
        elapsed = time.monotonic() - t0
        failed = poll.failed()
        unfinished = sum(1 for outcome in poll.outcomes.values() if outcome is None)
        if unfinished:  # cancelled by the deadline, while running or still waiting for a slot
            self.errors.labels("timeout").inc(unfinished)
        snap = await self._in_worker(self._snapshot, poll, failed)  # every queue of every listing: not on the loop
        self.snapshot = snap
        read = {k.removeprefix("vmta:") for k, outcome in poll.outcomes.items() if k.startswith("vmta:") and outcome}
        self._read_at = {v: at for v, at in self._read_at.items() if v in self._vmtas}  # forgotten VMTAs go
        self._read_at.update(dict.fromkeys(read, self.polls))
        self.polls += 1
        self.duration.set(min(elapsed, self.deadline) if self.deadline else elapsed)  # the requests' time: documented
        cause = "" if snap.up else ",".join(sorted(set(failed.values())))
        self._log_state(snap.up, snap.partial, self._summary(poll, failed), cause=cause)
        return snap.up

    def _offload(self, poll: _Poll) -> Callable[[Callable[[], _T]], Awaitable[_T]]:
        """The `Offload` of `poll`'s parses: the poller's worker, unless the poll is over when a parse's turn comes."""
        async def offload(parse: Callable[[], _T]) -> _T:
            return await self._in_worker(_unless_over, poll.over, parse)

        return offload

    async def _call(self, poll: _Poll, key: str, request: Callable[[], Awaitable[Any]]) -> None:
        """Runs one request, recording its outcome; never raises (but lets cancellation through)."""
        poll.outcomes[key] = None
        try:
            result = await request()
        except PmtaApiError as exc:
            poll.outcomes[key] = exc.reason
            poll.first_error.setdefault(exc.reason, str(exc))
            self.errors.labels(exc.reason).inc()
            log.debug("PMTA API: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - the client converts every failure it knows; this is a bug
            self._log_bug(f"PMTA API request {key} failed unexpectedly", exc)
            poll.outcomes[key] = "error"
            return
        poll.results[key] = result
        poll.outcomes[key] = "ok"

    async def _read_queues(self, client: PmtaApiClient, poll: _Poll) -> None:
        """PMTA's top-N list, plus (when configured) `*/<vmta>` for every VMTA listed by /vmtas, present
        in the top-N list or seen recently, `CONCURRENCY` at a time. Each listing starts its VMTAs'
        queries as soon as it answers, so one listing that hangs does not hold back the other's."""
        offload = self._offload(poll)
        if not self.config.per_vmta_queries:
            await self._call(poll, "top", lambda: client.queues(offload=offload))
            return
        self._age_vmtas()
        if self.deferring_vmtas is not None:
            self._seen_vmtas(sorted(self.deferring_vmtas()))
        sem = asyncio.Semaphore(CONCURRENCY)
        queried: set[str] = set()

        async def one(vmta: str) -> None:
            async with sem:
                await self._call(poll, f"vmta:{vmta}", lambda: client.queues(f"*/{vmta}", offload=offload))

        async with asyncio.TaskGroup() as tg:
            def query(listed: list[str]) -> None:
                self._seen_vmtas(listed)
                read_at = self._read_at  # the VMTAs read longest ago first: those a deadline cut off go next time
                for vmta in sorted(set(self._vmtas) - queried, key=lambda v: (read_at.get(v, -1), v)):
                    queried.add(vmta)
                    poll.outcomes[f"vmta:{vmta}"] = None  # planned: unread at the deadline means a timeout
                    tg.create_task(one(vmta))

            async def listing(key: str, request: Callable[[], Awaitable[Any]],
                              names: Callable[[Any], list[str]]) -> None:
                await self._call(poll, key, request)
                if key in poll.results:
                    query(names(poll.results[key]))

            tg.create_task(listing("vmtas", lambda: client.vmtas(offload=offload), lambda r: [v.name for v in r]))
            tg.create_task(listing("top", lambda: client.queues(offload=offload), lambda r: [q.vmta for q in r.queues]))

    def _snapshot(self, poll: _Poll, failed: dict[str, str]) -> Snapshot:
        """The gauges this poll may serve: what was read, minus every VMTA whose own query failed and every label it
        shares. Runs on the worker thread (`poll_once`): the loop's polls never touch this state meanwhile."""
        status: StatusInfo | None = poll.results.get("status")
        top: QueueList | None = poll.results.get("top")
        per_vmta = poll.vmta_results()
        queues: list[QueueInfo] | None = None
        if top is not None or "vmtas" in poll.results:  # a listing was read: we know which VMTAs have mail
            merged = {q.name: q for q in top.queues} if top is not None else {}
            for res in per_vmta.values():
                merged.update((q.name, q) for q in res.queues)
            unread = {k.removeprefix("vmta:") for k in failed if k.startswith("vmta:")}
            unread |= self._uncounted(poll, unread, merged.values())
            queues = [q for q in merged.values() if q.vmta not in unread]
            for q in queues:
                if q.rcp and q.vmta in self._vmtas:
                    self._vmtas[q.vmta] = 0
        up = status is not None or queues is not None
        snap = Snapshot(time.monotonic(), up=up, partial=up and bool(failed or poll.uncounted),
                        status=None if status is None else self._capped_status(status))
        if queues is not None:
            queues, unread_labels = self._whole_labels(queues, unread)
            snap.queues = self._aggregate(queues)
            listed = counted(queues)
            unlisted, undetermined = self._unlisted(per_vmta, top, poll.results.get("vmtas"), status, listed)
            snap.unlisted = {label: n for label, n in unlisted.items() if label not in unread_labels}
            seen = listed + sum(snap.unlisted.values())
            host = status.smtp_rcp if status is not None and status.smtp_rcp is not None else \
                top.total_rcp if top is not None else None  # the unfiltered list's totalRcp: every queue's
            if host is not None:  # none to measure against: no ratio (1.0 said "all shown" of 10 in 5,000)
                snap.coverage = 1.0 if not host else min(1.0, seen / host)
            # a cell is 0 only where the read was whole: not a VMTA whose query failed, nor one whose listing left
            # recipients out (a cell beyond it is not empty: at the listing's edge it would read 300, 0, 300 ...),
            # nor one whose listing no total says is whole, nor a queue of no VMTA (only the top list shows those)
            # unless that list is whole
            unknown = unread_labels | {v for v, rest in snap.unlisted.items() if rest} | undetermined
            if top is None or top.total_rcp is None or top.total_rcp > counted(top.queues):
                unknown.add(PLACEHOLDER_NONE)
            if not self.config.per_vmta_queries and (top is None or top.total_rcp is None or top.total_rcp > listed):
                unknown = None  # the top-N list alone, and not all of it: no cell can be said empty
            def cannot_tell(vmta: str) -> bool:
                return unknown is None or vmta in unknown

            width = len(QUEUE_METRICS)
            _zero_vanished(snap.queues, self._cells_at, lambda key: cannot_tell(key[0]), lambda: [0.0] * width)
            _zero_vanished(snap.unlisted, self._unlisted_at, cannot_tell, lambda: 0.0)
        return snap

    def _uncounted(self, poll: _Poll, unread: set[str], queues: Iterable[QueueInfo]) -> set[str]:
        """The VMTAs of queues PMTA gave no recipient count (`QueueInfo.rcp` None), but for those `unread` already:
        their sums would serve such a queue as 0, an empty queue to the stall alerts, so they are read as unread too.
        Each is a `parse` error once per poll; the first queue is named in the log line (`poll.uncounted`)."""
        for q in queues:
            vmta = q.vmta or "{default}"
            if q.rcp is None and vmta not in unread:
                poll.uncounted.setdefault(vmta, q.name)
        if poll.uncounted:
            name = next(iter(poll.uncounted.values()))
            poll.first_error.setdefault("parse", f"GET /queues: queue {_clip(name)!r} gave no recipient count (rcp "
                                                 "missing, not a number, or outside 0 to 1e12)")
            self.errors.labels("parse").inc(len(poll.uncounted))
        return set(poll.uncounted)

    @staticmethod
    def _summary(poll: _Poll, failed: dict[str, str]) -> str:
        if not failed and not poll.uncounted:
            return ""
        reasons: dict[str, int] = {}
        for reason in failed.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        vmtas = sorted({k.removeprefix("vmta:") for k in failed if k.startswith("vmta:")} | set(poll.uncounted))
        other = sorted(k for k in failed if not k.startswith("vmta:"))
        parts = [f"{len(failed)} of {len(poll.outcomes)} requests failed ("
                 + ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) + ")"] if failed else []
        if poll.uncounted:  # answers read, but not summable: no request failed
            shown = sorted(poll.uncounted)
            more = f" and {len(shown) - LOG_VMTAS} more" if len(shown) > LOG_VMTAS else ""
            parts.append("queues listed without a recipient count: " + ", ".join(_clip(v) for v in shown[:LOG_VMTAS])
                         + more)
        text = "; ".join(parts)
        if other:
            text += "; unread: " + ", ".join(other)
        if vmtas:
            more = f" and {len(vmtas) - LOG_VMTAS} more" if len(vmtas) > LOG_VMTAS else ""
            text += "; VMTAs without gauges: " + ", ".join(_clip(v) for v in vmtas[:LOG_VMTAS]) + more
        for reason, message in sorted(poll.first_error.items()):  # the cause, not only its class (DEBUG had it)
            text += f"; first {reason}: {_clip(message, LOG_TEXT_CHARS)}"
        return text

    def _log_state(self, up: bool, partial: bool, detail: str, setting: str = "", cause: str = "") -> None:
        """One line when the API goes up, partial or down (not every poll), or when what keeps it down changes: the
        pmta.* setting, or the `cause` (the failures' reasons: down for `connect`, then for `http_status`)."""
        state = (up, partial, setting, cause)
        if state == self._state:
            return
        self._state = state
        suffix = f": {detail}" if detail else ""
        if setting:
            log.warning("PMTA management API at %s cannot be polled, no queue gauges: %s", self.config.url, setting)
        elif up and not partial:
            log.info("PMTA management API at %s is reachable", self.config.url)
        elif up:
            log.warning("PMTA management API at %s answers in part%s", self.config.url, suffix)
        else:
            log.warning("PMTA management API at %s is failing; no queue gauges%s", self.config.url, suffix)

    def _age_vmtas(self) -> None:
        """One more poll for every VMTA we know; those unseen for `VMTA_FORGET_POLLS` are no longer queried."""
        self._vmtas = {n: age + 1 for n, age in self._vmtas.items() if age < VMTA_FORGET_POLLS}

    def _seen_vmtas(self, listed: list[str]) -> None:
        for name in listed:
            if name:
                self._vmtas[name] = 0
        if len(self._vmtas) > self._max_queried:
            keep = sorted(self._vmtas.items(), key=lambda kv: (kv[1], kv[0]))[:self._max_queried]
            self._vmtas = dict(keep)

    # --- labels ----------------------------------------------------------------------------------
    def _known_label(self, vmta: str) -> str:
        """The label `vmta` has, or would have now, without admitting it to the cap (a VMTA whose query failed gets
        no series)."""
        if _unnamed(vmta):
            return PLACEHOLDER_NONE
        cap = self.vmta_cap
        if vmta in cap.admitted:
            return vmta
        return vmta if len(vmta) <= MAX_LABEL_VALUE_CHARS and len(cap.admitted) < cap.cap else PLACEHOLDER_OVERFLOW

    def _whole_labels(self, queues: list[QueueInfo], unread: set[str]) -> tuple[list[QueueInfo], set[str]]:
        """`queues` less those of a label an `unread` VMTA has too, and those labels. `overflow` (past
        labels.max_vmtas) and `none` sum several VMTAs: with one of them unread, the sum of the others would be served
        as the label's (absent, not partial). The labels read are admitted first, in listing order, so that an unread
        VMTA's label is the one it would share."""
        labels = {vmta: self._vmta_label(vmta) for vmta in dict.fromkeys(q.vmta for q in queues)}
        unread_labels = {self._known_label(vmta) for vmta in unread}
        dropped = {vmta for vmta, label in labels.items() if label in unread_labels}
        return ([q for q in queues if q.vmta not in dropped] if dropped else queues), unread_labels

    def _capped_status(self, status: StatusInfo) -> StatusInfo:
        """/status with its delivery types as `type` labels: beyond `MAX_STATUS_TYPES` (or the label length bound)
        summed as `overflow`."""
        queue: dict[str, QueueTotals] = {}
        for qtype, totals in status.queue.items():
            label = self.type_cap(qtype)
            prev = queue.get(label)
            queue[label] = totals if prev is None else QueueTotals(
                _plus(prev.rcp, totals.rcp), _plus(prev.dom, totals.dom), _plus(prev.kb, totals.kb))
        return dataclasses.replace(status, queue=queue)

    def _vmta_label(self, vmta: str) -> str:
        return PLACEHOLDER_NONE if _unnamed(vmta) else self.vmta_cap(vmta)

    def _isp(self, domain: str) -> str:
        """Asked again at every poll, not cached: for a domain the ISP table does not list, the answer is what the
        records have taught the classifier since (a delivery's dsnMta), and the record series already use it."""
        try:
            return self.isp_of_domain(domain.lower()) or PLACEHOLDER_OTHER
        except Exception:
            return PLACEHOLDER_OTHER

    def _unlisted(self, listings: dict[str, QueueList], top: QueueList | None, vmtas: list[VmtaInfo] | None,
                  status: StatusInfo | None, listed: float) -> tuple[dict[str, float], set[str]]:
        """A VMTA's own listing is top-N too: the recipients of its queues not shown, per VMTA label. A gauge of its
        own: their ISP is unknown, and under `pmta_queue_recipients` they would be a (vmta, isp) queue no delivery
        counter can match (the stall alerts would fire on it). Also the labels of the VMTAs whose listings no total
        says are whole (`Unlisted.undetermined`)."""
        totals = [t for t in (status.smtp_rcp if status else None, top.total_rcp if top else None) if t is not None]
        host = max(totals) if totals else None
        found = unlisted_recipients(listings, top.total_rcp if top else None, vmtas, host, listed,
                                    previous=bool(self._global_totals))
        self._log_meaning(found.global_totals)
        out: dict[str, float] = {}
        for vmta, rest in found.per_vmta.items():
            label = self._vmta_label(vmta)
            out[label] = out.get(label, 0.0) + rest
        return out, {self._known_label(v) for v in found.undetermined}

    def _log_meaning(self, global_totals: bool) -> None:
        """One line when the meaning read from PMTA's per-VMTA totalRcp changes (an operator may wonder why some
        VMTAs have no unlisted gauge)."""
        if global_totals == self._global_totals:
            return
        if global_totals or self._global_totals is not None:
            log.info("PMTA's totalRcp of a per-VMTA queue listing counts %s; unlisted recipients are %s",
                     "every queue" if global_totals else "that VMTA's queues",
                     "the VMTA's recipients in /vmtas less those listed (VMTAs beyond /vmtas' top N: none)"
                     if global_totals else "that total less those listed")
        self._global_totals = global_totals

    def _aggregate(self, queues: Iterable[QueueInfo]) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for q in queues:
            key = (self._vmta_label(q.vmta), self._isp(q.domain))
            row = out.get(key)
            if row is None:
                row = out[key] = [0.0] * len(QUEUE_METRICS)
            row[0] += q.rcp or 0  # none is None here: `_uncounted` made their VMTAs unread
            row[1] += _bytes(q.kb) or 0.0
            row[2] += q.conn
            row[3] += 1 if q.backoff else 0
            row[4] += 1 if q.paused else 0
            row[5] += (q.rcp or 0) if q.paused else 0  # only its paused queues' recipients (a cell has many domains)
        return out


def counted(queues: Iterable[QueueInfo]) -> int:
    """The recipients of `queues` that PMTA gave a count for (a queue without one is its VMTA's failed read)."""
    return sum(q.rcp for q in queues if q.rcp is not None)


def _unless_over(over: threading.Event, work: Callable[[], _T]) -> _T:
    """`work()`, on the worker, unless its poll is over: a parse queued behind others past the deadline is dropped
    (its request already counted as a timeout; no one waits for it)."""
    if over.is_set():
        raise PmtaApiError("timeout", "not parsed: the poll's deadline passed while the answer waited for the worker")
    return work()


def _plus(a: _N | None, b: _N | None) -> _N | None:
    """A sum of values that may be missing: missing only when both are."""
    if a is None:
        return b
    return a if b is None else a + b


def _clip(text: str, limit: int = LOG_NAME_CHARS) -> str:
    """`text` as quoted in a log line: cut after `limit` characters (before a local part the cut would split from
    its `@`: the redacting handler could not find it), saying how long it was."""
    return text if len(text) <= limit else f"{text[:cut_point(text, limit)]}... ({len(text)} characters)"


def _unnamed(vmta: str) -> bool:
    """A queue of no VMTA (PMTA's `{default}`, or none): the `none` placeholder, never a cap's value."""
    return not vmta or vmta == "{default}"


def _zero_vanished(cells: dict[Any, Any], last_read: dict[Any, float], unread: Callable[[Any], bool],
                   zero: Callable[[], Any]) -> None:
    """Serve as `zero` the cells a read gave within `VANISHED_AS_ZERO` seconds that this one did not (emptied, or
    beyond a top-N listing now), and forget older ones; a cell of a VMTA whose query failed is neither zeroed nor
    forgotten (no series, as every gauge of an unread VMTA). `last_read` is updated in place."""
    now = time.monotonic()
    for key in cells:
        last_read[key] = now
    for key, at in list(last_read.items()):
        if key in cells or unread(key):
            continue
        if now - at <= VANISHED_AS_ZERO:
            cells[key] = zero()
        else:
            del last_read[key]


@dataclass(frozen=True, slots=True)
class Unlisted:
    """`unlisted_recipients`' answer: recipients per VMTA beyond its own listing, and the totalRcp meaning read."""

    per_vmta: dict[str, float]
    global_totals: bool
    undetermined: frozenset[str] = frozenset()
    """VMTAs whose listing may leave queues out though no total says how many (no totalRcp, no /vmtas count): a
    queue gone from their listing cannot be said empty."""


def totals_are_global(listings: dict[str, QueueList], top_total: int | None, host_total: int | None,
                      previous: bool = False) -> bool:
    """Whether the per-VMTA listings' totalRcp count every queue (pmta-http-api.md §5.3: "recipients in all queues")
    rather than the VMTA's: together they exceed `GLOBAL_SUM` host totals (one VMTA's own total can only reach the
    host's), or two or more are one non-zero number (the unfiltered list's, when it answered). Two or more different
    totals within the host's are the VMTA's own; fewer totals than two (or no host total) cannot tell: `previous`,
    the last poll's reading, stands (a meaning does not flip with the listings that answered)."""
    totals = [listing.total_rcp for listing in listings.values() if listing.total_rcp is not None]
    if host_total is not None and sum(totals) > GLOBAL_SUM * max(host_total, 1):
        return True
    if len(totals) >= 2 and len(set(totals)) == 1 and totals[0] > 0 and top_total in (None, totals[0]):
        return True
    if len(totals) >= 2 and host_total is not None:
        return False
    return previous


def unlisted_recipients(listings: dict[str, QueueList], top_total: int | None, vmtas: list[VmtaInfo] | None,
                        host_total: int | None, listed: float, previous: bool = False) -> Unlisted:
    """Recipients of each VMTA's queues beyond its own top-N listing: its total less the queues the listing shows.

    Its total is the listing's totalRcp, unless those are whole-host totals (`totals_are_global`): then the VMTA's
    `rcp` in /vmtas, and nothing for a VMTA /vmtas did not list. Whatever the meaning, the sum never exceeds the
    host's total (/status or the unfiltered list; else what /vmtas lists, a lower bound) less the `listed`
    recipients (scaled down to it), the most any VMTA could hold unlisted."""
    if host_total is None and vmtas:
        host_total = sum(v.rcp for v in vmtas)
    global_totals = totals_are_global(listings, top_total, host_total, previous)
    own = {v.name: v.rcp for v in vmtas or []}
    if global_totals:
        totals: dict[str, int | None] = {vmta: own.get(vmta) for vmta in listings}
    else:  # a listing without its totalRcp (a shape the reference leaves open): the VMTA's count in /vmtas
        totals = {vmta: listing.total_rcp if listing.total_rcp is not None else own.get(vmta)
                  for vmta, listing in listings.items()}
    rest: dict[str, float] = {}
    for vmta, listing in listings.items():
        total = totals[vmta]
        if total is not None and (beyond := total - counted(listing.queues)) > 0:
            rest[vmta] = float(beyond)
    undetermined = frozenset(vmta for vmta, total in totals.items() if total is None and listings[vmta].queues)
    return Unlisted(_capped(rest, None if host_total is None else host_total - listed), global_totals, undetermined)


def _capped(rest: dict[str, float], budget: float | None) -> dict[str, float]:
    """`rest` scaled down so that it sums to `budget` at most (None: no bound)."""
    total = sum(rest.values())
    if budget is None or total <= budget:
        return rest
    if budget <= 0:
        return {}
    return {vmta: n * budget / total for vmta, n in rest.items()}

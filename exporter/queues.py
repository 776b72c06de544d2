"""Queue gauges from PMTA's management API: a poller task plus a custom collector over its last snapshot.

Each poll reads /status (host totals) and the queue list. PMTA lists only its top N queues
(`http-default-max-items`, default 10), so with `per_vmta_queries` the poller also asks /vmtas and
then `/queues?queue=*/<vmta>` for every VMTA it knows (listed by /vmtas - itself a top-N list -,
present in the top-N queue list, or seen with mail in the last polls); whatever part fails, the
rest is merged. Queues (`domain/vmta`) are summed to (vmta, isp): the domain itself never becomes a label.
`watchtower_pmta_queue_coverage_ratio` says how much of /status's total the per-queue gauges saw.

A down, slow or garbled API never raises out of `run()`: every request has a hard deadline, errors
are counted by reason, polls back off exponentially up to `max_backoff`, and the collector keeps
serving the last good snapshot until it is older than `STALE_POLLS` poll intervals (then the
gauges disappear and only `watchtower_pmta_api_up 0` remains).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.config import PmtaApiConfig
from exporter.metrics import PLACEHOLDER_NONE, PLACEHOLDER_OTHER, PLACEHOLDER_OVERFLOW, SPECS, self_metrics_for_api
from exporter.pmta_api import API_ERROR_REASONS, PmtaApiClient, PmtaApiError, QueueInfo, QueueList, StatusInfo

log = logging.getLogger("watchtower.queues")
T = TypeVar("T")

MAX_VMTA_LABELS = 2000
"""Same bound as `labels.max_vmtas`' default; further VMTAs are summed under `overflow`."""
STALE_POLLS = 5
VMTA_FORGET_POLLS = 3
"""A VMTA missing from /vmtas is still queried for this many polls (/vmtas is itself a top-N list)."""
CONCURRENCY = 4

QUEUE_METRICS = ("pmta_queue_recipients", "pmta_queue_bytes", "pmta_queue_connections", "pmta_queue_backoff",
                 "pmta_queue_paused")


@dataclass
class Snapshot:
    """What one successful poll saw, already aggregated to label values."""

    taken: float
    queues: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(vmta, isp) -> [recipients, bytes, connections, queues in backoff, queues paused]."""
    status: StatusInfo | None = None


class QueueCollector:
    """client_python custom collector: GaugeMetricFamily per row of the metric table, from the last snapshot."""

    def __init__(self, poller: QueuePoller) -> None:
        self.poller = poller

    def describe(self) -> Iterable[Metric]:
        return self._families(None, None)

    def collect(self) -> Iterable[Metric]:
        fresh = self.poller.fresh()
        return self._families(fresh.queues if fresh else None, fresh.status if fresh else None)

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily:
        spec = SPECS[name]
        return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))

    def _families(self, queues: dict[tuple[str, str], list[float]] | None,
                  status: StatusInfo | None) -> list[Metric]:
        fams = [self._family(n) for n in QUEUE_METRICS]
        for (vmta, isp), values in sorted((queues or {}).items()):
            for fam, value in zip(fams, values, strict=True):
                fam.add_metric([vmta, isp], value)
        rcp, dom, kb = (self._family(n) for n in ("pmta_status_queue_recipients", "pmta_status_queue_domains",
                                                  "pmta_status_queue_bytes"))
        conn, spool = self._family("pmta_status_connections"), self._family("pmta_status_spool_files")
        if status is not None:
            for qtype, totals in sorted(status.queue.items()):
                rcp.add_metric([qtype], totals.rcp)
                dom.add_metric([qtype], totals.dom)
                kb.add_metric([qtype], round(totals.kb * 1024))
            for direction, value in (("in", status.conn_in), ("out", status.conn_out)):
                if value is not None:
                    conn.add_metric([direction], value)
            if status.spool_files is not None:
                spool.add_metric([], status.spool_files)
        return [*fams, rcp, dom, kb, conn, spool]


class QueuePoller:
    """Polls PMTA every `poll_interval`; `await run()` until cancelled."""

    def __init__(self, config: PmtaApiConfig, registry: CollectorRegistry, isp_of_domain: Callable[[str], str],
                 *, transport: object | None = None) -> None:
        self.config = config
        self.isp_of_domain = isp_of_domain
        self._transport = transport
        m = self_metrics_for_api(registry)
        self.up = m["watchtower_pmta_api_up"]
        self.duration = m["watchtower_pmta_api_poll_duration_seconds"]
        self.errors = m["watchtower_pmta_api_errors_total"]
        self.coverage = m["watchtower_pmta_queue_coverage_ratio"]
        for reason in API_ERROR_REASONS:
            self.errors.labels(reason)
        self.snapshot: Snapshot | None = None
        self.failures = 0
        self.polls = 0
        self._vmtas: dict[str, int] = {}
        """VMTA -> polls since it was last listed by /vmtas or seen with queued mail."""
        self._vmta_labels: set[str] = set()
        self._isp_cache: dict[str, str] = {}
        self._was_up: bool | None = None
        registry.register(QueueCollector(self))

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
                except PmtaApiError as exc:
                    self._failed(exc)
                    self.up.set(0)
                except Exception:  # a bug must not kill the poller (or the daemon)
                    log.exception("PMTA API poll failed unexpectedly")
                    self.up.set(0)
                await asyncio.sleep(self.next_delay(ok))
        finally:
            if client is not None:
                await asyncio.shield(client.aclose())

    def next_delay(self, ok: bool) -> float:
        interval = self.config.poll_interval
        if ok:
            self.failures = 0
            return interval
        self.failures += 1
        return max(interval, min(self.config.max_backoff, interval * 2 ** (self.failures - 1)))

    def fresh(self) -> Snapshot | None:
        snap = self.snapshot
        max_age = STALE_POLLS * max(self.config.poll_interval, 1.0)
        if snap is None or time.monotonic() - snap.taken > max_age:
            return None
        return snap

    # --- one poll --------------------------------------------------------------------------------
    async def poll_once(self, client: PmtaApiClient) -> bool:
        """One full poll; updates the snapshot and self-metrics. True when status and queues were read."""
        t0 = time.monotonic()
        self.polls += 1
        status = await self._try(client.status())
        queues = await self._queues(client)
        ok = status is not None and queues is not None
        if ok:
            assert status is not None and queues is not None
            self.snapshot = Snapshot(time.monotonic(), self._aggregate(queues), status)
            total = status.smtp_rcp
            seen = sum(q.rcp for q in queues)
            self.coverage.set(1.0 if not total else min(1.0, seen / total))
        self.up.set(1 if ok else 0)
        self.duration.set(time.monotonic() - t0)
        if ok != self._was_up:
            (log.info if ok else log.warning)("PMTA management API at %s is %s", self.config.url,
                                              "reachable" if ok else "failing; queue gauges go stale")
            self._was_up = ok
        return ok

    async def _try(self, coro: Awaitable[T]) -> T | None:
        try:
            return await coro
        except PmtaApiError as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: PmtaApiError) -> None:
        self.errors.labels(exc.reason).inc()
        log.debug("PMTA API: %s", exc)

    async def _queues(self, client: PmtaApiClient) -> list[QueueInfo] | None:
        """Every queue we can see: PMTA's top-N list, plus (when configured) `*/<vmta>` for every VMTA
        listed by /vmtas, present in the top-N list or seen recently. None when nothing could be read."""
        if not self.config.per_vmta_queries:
            top = await self._try(client.queues())
            return list(top.queues) if top is not None else None
        listed, top = await asyncio.gather(self._try(client.vmtas()), self._try(client.queues()))
        if listed is None and top is None:
            return None
        top_queues = top.queues if top is not None else []
        names = self._vmtas_to_query([v.name for v in listed or ()] + [q.vmta for q in top_queues])
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(vmta: str) -> QueueList | None:
            async with sem:
                return await self._try(client.queues(f"*/{vmta}"))

        merged = {q.name: q for q in top_queues}
        for res in await asyncio.gather(*(one(v) for v in names)):
            for q in res.queues if res is not None else ():
                merged[q.name] = q
        for q in merged.values():
            if q.rcp and q.vmta in self._vmtas:
                self._vmtas[q.vmta] = 0
        return list(merged.values())

    def _vmtas_to_query(self, listed: list[str]) -> list[str]:
        for name in self._vmtas:
            self._vmtas[name] += 1
        for name in listed:
            if name:
                self._vmtas[name] = 0
        self._vmtas = {n: age for n, age in self._vmtas.items() if age <= VMTA_FORGET_POLLS}
        if len(self._vmtas) > MAX_VMTA_LABELS:
            keep = sorted(self._vmtas.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_VMTA_LABELS]
            self._vmtas = dict(keep)
        return sorted(self._vmtas)

    # --- labels ----------------------------------------------------------------------------------
    def _vmta_label(self, vmta: str) -> str:
        if not vmta or vmta == "{default}":
            return PLACEHOLDER_NONE
        if vmta in self._vmta_labels:
            return vmta
        if len(self._vmta_labels) >= MAX_VMTA_LABELS:
            return PLACEHOLDER_OVERFLOW
        self._vmta_labels.add(vmta)
        return vmta

    def _isp(self, domain: str) -> str:
        isp = self._isp_cache.get(domain)
        if isp is None:
            try:
                isp = self.isp_of_domain(domain.lower()) or PLACEHOLDER_OTHER
            except Exception:
                isp = PLACEHOLDER_OTHER
            if len(self._isp_cache) > 100_000:
                self._isp_cache.clear()
            self._isp_cache[domain] = isp
        return isp

    def _aggregate(self, queues: Iterable[QueueInfo]) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for q in queues:
            key = (self._vmta_label(q.vmta), self._isp(q.domain))
            row = out.get(key)
            if row is None:
                row = out[key] = [0.0, 0.0, 0.0, 0.0, 0.0]
            row[0] += q.rcp
            row[1] += round(q.kb * 1024)
            row[2] += q.conn
            row[3] += 1 if q.backoff else 0
            row[4] += 1 if q.paused else 0
        return out

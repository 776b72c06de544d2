"""One poll's work is bounded and kept off what /metrics needs (review 2026-12-06: a 16 MiB answer cost 0.5 GB and
5-8 s to parse, up to 7 at once in the default thread pool /metrics renders in; a parse outlived its poll's deadline;
the queues were summed on the event loop). The project has no timing assertions: these tests pin behaviour."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter import pmta_api
from exporter.config import PmtaApiConfig
from exporter.exposition import render_metrics
from exporter.labelcap import LabelCap
from exporter.pmta_api import PmtaApiClient, PmtaApiError, parse_queues
from exporter.queues import QueuePoller

HANG_GUARD = 20.0
"""Seconds a test waits for what must happen before calling it a failure: a hang guard, not a speed bound."""
STATUS = (b"<rsp><data><status><queue><smtp><rcp>60</rcp><dom>3</dom><kb>4.0</kb></smtp></queue></status>"
          b"</data><succ/></rsp>")


def _padded(body: bytes) -> bytes:
    """`body` made longer than THREAD_PARSE_BYTES (a comment before the root): parsed in a worker thread."""
    return b"<!--" + b" " * (pmta_api.THREAD_PARSE_BYTES + 1) + b"-->" + body


def _listing(*rows: tuple[str, int], total: int | None = None) -> bytes:
    items = "".join(f"<queue><name>{n}</name><rcp>{r}</rcp><kb>1.0</kb></queue>" for n, r in rows)
    tail = "" if total is None else f"<totalRcp>{total}</totalRcp>"
    return f"<rsp><data>{items}{tail}</data><succ/></rsp>".encode()


def _client(poller: QueuePoller, answers: dict[str, Any]) -> PmtaApiClient:
    """A client of a PMTA answering `answers[queue= or path]` (bytes; an int: that HTTP status)."""
    def answer(request: httpx.Request) -> httpx.Response:
        got = answers.get(request.url.params.get("queue") or request.url.path, 404)
        return httpx.Response(got) if isinstance(got, int) else httpx.Response(200, content=got)

    return PmtaApiClient(poller.config, transport=httpx.MockTransport(answer))


async def _until(condition: Callable[[], bool]) -> None:
    """Waits on the loop (never in a thread pool) until `condition()` holds."""
    async with asyncio.timeout(HANG_GUARD):
        while not condition():
            await asyncio.sleep(0.01)


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for m in registry.collect() for s in m.samples if s.name == name}


def _blocking(release: threading.Event, started: threading.Event, real: Callable[..., Any],
              threads: list[str] | None = None) -> Callable[..., Any]:
    """`real`, held in its thread until `release` is set."""
    def parse(body: bytes, fmt: str) -> Any:
        if threads is not None:
            threads.append(threading.current_thread().name)
        started.set()
        release.wait(HANG_GUARD)
        return real(body, fmt)

    return parse


# --- 1. the poller's parses run on its own worker, never in the default pool -----------------------------------
async def test_a_parse_stuck_in_the_poller_does_not_hold_up_a_metrics_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default pool /metrics formats in was the poller's too: seven 16 MiB parses filled it and a scrape waited
    12 s. Here the default pool has one worker (a full pool, as it was): a parse held in the poller must leave it
    free, so a render completes while the parse is still held."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="default-pool"))
    release, started, threads = threading.Event(), threading.Event(), []
    monkeypatch.setattr(pmta_api, "parse_queues", _blocking(release, started, parse_queues, threads))
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=False, poll_deadline=60), registry,
                         lambda d: "gmail")
    try:
        async with _client(poller, {"/status": STATUS, "/queues": _padded(_listing(("gmail.com/v1", 5)))}) as client:
            poll = asyncio.create_task(poller.poll_once(client))
            await _until(started.is_set)
            rendered = asyncio.create_task(render_metrics(registry, "", ""))
            done, _ = await asyncio.wait({rendered}, timeout=HANG_GUARD)
            held = not release.is_set()
            release.set()
            await poll
            assert done == {rendered} and held, "/metrics waited for the poller's parse"
            assert b"watchtower_pmta_api_up" in (await rendered)[0]
    finally:
        release.set()
    assert threads and not threads[0].startswith("default-pool")
    assert _series(registry, "pmta_queue_recipients") == {("v1", "gmail"): 5.0}
    poller.close(wait=True)


async def test_a_parse_still_waiting_for_the_worker_at_the_deadline_is_never_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled poll's parses kept their threads and ran to the end, long after the deadline (16 MiB, 5-8 s
    each). One worker parses in turn; a parse not started when its poll's deadline passes is skipped (a timeout)."""
    release, started, queued = threading.Event(), threading.Event(), []
    monkeypatch.setattr(pmta_api, "parse_status", _blocking(release, started, pmta_api.parse_status))
    monkeypatch.setattr(pmta_api, "parse_queues", lambda body, fmt: queued.append(fmt) or parse_queues(body, fmt))
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=False, poll_deadline=0.5), registry,
                         lambda d: "gmail")
    def timeouts() -> float | None:
        return registry.get_sample_value("watchtower_pmta_api_errors_total", {"reason": "timeout"})

    try:
        async with _client(poller, {"/status": _padded(STATUS),
                                    "/queues": _padded(_listing(("gmail.com/v1", 5)))}) as client:
            poll = asyncio.create_task(poller.poll_once(client))
            await _until(lambda: bool(timeouts()))  # the deadline passed
            assert queued == [] and timeouts() == 2  # both unfinished: one held, one waiting for the worker
            release.set()  # the held parse ends; what was queued behind it is dropped, not started
            assert not await poll
        poller.close(wait=True)  # waits for the held parse; what was queued behind it is dropped
    finally:
        release.set()
    assert queued == []
    assert timeouts() == 2


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_an_answer_of_more_elements_than_any_listing_is_a_parse_error_naming_the_bound(
        monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """`<a/>` x 4 million fits the 16 MiB cap and cost 0.5 GB and seconds to parse: the parse stops past
    MAX_ELEMENTS (elements of XML, values of JSON), whatever the shape."""
    monkeypatch.setattr(pmta_api, "MAX_ELEMENTS", 1000)
    if fmt == "xml":
        body = b"<rsp><data>" + b"<a/>" * 1001 + b"</data><succ/></rsp>"
    else:
        body = json.dumps({"status": "success", "data": [{}] * 1001}).encode()
    with pytest.raises(PmtaApiError) as err:
        parse_queues(body, fmt)
    assert err.value.reason == "parse" and "more than 1,000 elements" in str(err.value)
    ok = [("gmail.com/v1", 5)] * 100
    small = _listing(*ok) if fmt == "xml" else json.dumps({"status": "success", "data": {"queue": [
        {"name": n, "rcp": r} for n, r in ok]}}).encode()
    assert len(parse_queues(small, fmt).queues) == 100


async def test_a_vmta_whose_listing_passes_the_element_bound_is_unread_and_the_log_names_the_path(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pmta_api, "MAX_ELEMENTS", 1000)
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", api_key="s3cr3t-key", per_vmta_queries=True), registry,
                         lambda d: "gmail")
    flood = _padded(b"<rsp><data>" + b"<a/>" * 1001 + b"</data><succ/></rsp>")
    vmtas = b"<rsp><data><vmta><name>v1</name><rcp>5</rcp></vmta><vmta><name>v2</name><rcp>5</rcp></vmta></data>" \
            b"<succ/></rsp>"
    with caplog.at_level(logging.WARNING, logger="watchtower.queues"):
        async with _client(poller, {"/status": STATUS, "/vmtas": vmtas, "/queues": _listing(total=10),
                                    "*/v1": _listing(("gmail.com/v1", 5), total=5), "*/v2": flood}) as client:
            assert await poller.poll_once(client)
    assert registry.get_sample_value("watchtower_pmta_api_partial") == 1
    assert _series(registry, "pmta_queue_recipients") == {("v1", "gmail"): 5.0}
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "GET /queues" in text and "more than 1,000 elements" in text and "s3cr3t" not in text
    poller.close(wait=True)


async def test_queues_past_the_bound_of_one_listing_count_as_unlisted_with_a_line_naming_the_path(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A listing keeps its first MAX_QUEUES queues (PMTA lists the largest first); the recipients of the others are
    what its totalRcp says beyond them, as for any top-N listing."""
    monkeypatch.setattr(pmta_api, "MAX_QUEUES", 3)
    rows = [(f"d{i}.example/v1", 10 - i) for i in range(5)]
    assert [q.name for q in parse_queues(_listing(*rows, total=40), "xml").queues] == [n for n, _ in rows[:3]]
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=True), registry, lambda d: "gmail")
    vmtas = b"<rsp><data><vmta><name>v1</name><rcp>40</rcp></vmta></data><succ/></rsp>"
    with caplog.at_level(logging.WARNING, logger="watchtower.pmta_api"):
        async with _client(poller, {"/status": STATUS, "/vmtas": vmtas, "/queues": _listing(total=40),
                                    "*/v1": _listing(*rows, total=40)}) as client:
            assert await poller.poll_once(client)
    assert _series(registry, "pmta_queue_recipients") == {("v1", "gmail"): 27.0}
    assert _series(registry, "pmta_queue_unlisted_recipients") == {("v1",): 13.0}
    lines = [r.getMessage() for r in caplog.records if r.name == "watchtower.pmta_api"]
    assert len(lines) == 1 and "GET /queues" in lines[0] and "*/v1" in lines[0] and "first 3" in lines[0], lines
    poller.close(wait=True)


# --- 2. the queues are summed off the event loop; the duration gauge means what it says -------------------------
def _vmta_setup(answers: dict[str, Any], n: int = 3) -> None:
    answers["/vmtas"] = ("<rsp><data>" + "".join(f"<vmta><name>v{i}</name><rcp>20</rcp></vmta>"
                                                 for i in range(1, n + 1)) + "</data><succ/></rsp>").encode()
    answers["/queues"] = _listing(total=20 * n)
    for i in range(1, n + 1):
        answers[f"*/v{i}"] = _listing((f"gmail.com/v{i}", 20), total=20)


async def test_the_queues_are_summed_while_the_event_loop_runs_on() -> None:
    """`_snapshot` summed every queue of every listing on the loop: stalls of 0.9-11 s. The sum runs while the loop
    answers: the loop can set an event the sum waits for (on the loop it could not, and would wait in vain)."""
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=True), registry, lambda d: "gmail")
    loop = asyncio.get_running_loop()
    real, answered = poller._aggregate, []

    def aggregate(queues: Any) -> Any:
        loop_free = threading.Event()
        loop.call_soon_threadsafe(loop_free.set)
        answered.append(loop_free.wait(HANG_GUARD))
        return real(queues)

    poller._aggregate = aggregate  # type: ignore[method-assign]
    answers: dict[str, Any] = {"/status": STATUS}
    _vmta_setup(answers)
    async with _client(poller, answers) as client:
        assert await poller.poll_once(client)
    assert answered == [True]
    assert _series(registry, "pmta_queue_recipients") == {(f"v{i}", "gmail"): 20.0 for i in (1, 2, 3)}
    poller.close(wait=True)


async def test_the_poll_duration_gauge_is_at_most_the_deadline() -> None:
    """docs/metrics.md: "at most pmta.poll_deadline"; it read 12.7 with a deadline of 10 (the sum after the
    requests was counted). A poll the deadline cuts off reads at most the deadline, however long the sum takes."""
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=False, poll_deadline=0.3), registry,
                         lambda d: "gmail")
    real = poller._aggregate

    def slow(queues: Any) -> Any:
        threading.Event().wait(0.6)
        return real(queues)

    poller._aggregate = slow  # type: ignore[method-assign]

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/status":
            await asyncio.sleep(HANG_GUARD)
        return httpx.Response(200, content=_listing(("gmail.com/v1", 5), total=5))

    async with PmtaApiClient(poller.config, transport=httpx.MockTransport(answer)) as client:
        assert await poller.poll_once(client)
    duration = registry.get_sample_value("watchtower_pmta_api_poll_duration_seconds")
    assert duration is not None and 0 < duration <= 0.3
    poller.close(wait=True)


# --- 4. a label shared by several VMTAs is served whole or not at all --------------------------------------------
@pytest.mark.parametrize("shared", ["overflow", "none"])
async def test_a_label_one_of_whose_vmtas_failed_has_no_queue_series(shared: str) -> None:
    """Under labels.max_vmtas, v2 and v3 are both `overflow` (or both queues of no VMTA: `none`). v3's listing
    failing left `overflow` at v2's 20 recipients: a partial sum where the docs say a VMTA not read has no
    pmta_queue_* series (absent, not stale)."""
    names = ["v1", "v2", "v3"] if shared == "overflow" else ["v1", "{default}", ""]
    fail: set[str] = set()
    listing = {v: _listing((f"gmail.com/{v}", 20), total=20) for v in names}
    vmtas = ("<rsp><data>" + "".join(f"<vmta><name>{v}</name><rcp>20</rcp></vmta>" for v in names if v)
             + "</data><succ/></rsp>").encode()

    def answer(request: httpx.Request) -> httpx.Response:
        queue = request.url.params.get("queue")
        if request.url.path == "/status":
            return httpx.Response(200, content=STATUS)
        if request.url.path == "/vmtas":
            return httpx.Response(200, content=vmtas)
        if queue:
            vmta = queue.partition("/")[2]
            return httpx.Response(500) if vmta in fail else httpx.Response(200, content=listing[vmta])
        return httpx.Response(200, content=_listing(*((f"gmail.com/{v}", 20) for v in names), total=60))

    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta"), registry, lambda d: "gmail", vmta_cap=LabelCap("vmta", 1))
    async with PmtaApiClient(poller.config, transport=httpx.MockTransport(answer)) as client:
        await poller.poll_once(client)
        assert _series(registry, "pmta_queue_recipients") == {("v1", "gmail"): 20.0, (shared, "gmail"): 40.0}
        fail.add("v3" if shared == "overflow" else "{default}")
        await poller.poll_once(client)
    assert _series(registry, "pmta_queue_recipients") == {("v1", "gmail"): 20.0}
    assert registry.get_sample_value("watchtower_pmta_api_partial") == 1
    assert registry.get_sample_value("watchtower_pmta_queue_coverage_ratio") == pytest.approx(20 / 60)
    poller.close(wait=True)


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_a_real_listing_of_5000_queues_with_ten_events_each_is_read(fmt: str) -> None:
    """Regression review 2026-12-06: the first bound (250,000) refused the JSON listing of 4,500 queues the simulator
    renders, each with PMTA 5.0's ten events whose texts hold commas (~58 values a queue): PMTA then read as down."""
    from simulator.api import to_xml

    text = ('Error: "452-4.2.2 The email account that you tried to reach is over quota, try again later, gsmtp" '
            "while connected from mta5.sender.example (10.0.0.5) to gmail-smtp-in.l.google.com (142.250.1.27)")
    queues = [{"name": f"d{i}.example/vmta-{i % 40}", "rcp": 5000 - i, "kb": 12.5, "conn": 1,
               "event": [{"type": "error", "time": "2026-12-06T10:00:00+00:00", "text": text}] * 10,
               "paused": "no", "mode": "backoff", "retryTime": ""} for i in range(5000)]
    data = {"title": "Top 5000 queues by number of recipients", "queue": queues,
            "totalRcp": sum(q["rcp"] for q in queues), "totalQueuesWithRcp": 5000}
    body = (json.dumps({"status": "success", "data": data}) if fmt == "json"
            else "<rsp>" + to_xml("data", data) + "<succ/></rsp>").encode()
    assert len(body) <= pmta_api.MAX_BODY_BYTES
    listing = parse_queues(body, fmt)
    assert (len(listing.queues), listing.total_rcp) == (5000, data["totalRcp"])


def test_attributes_count_against_the_element_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """One start tag of 1.4 million attributes (15.7 MB) counted as 6 elements and parsed ~10 s, 557 MB."""
    monkeypatch.setattr(pmta_api, "MAX_ELEMENTS", 1000)
    attrs = " ".join(f'a{i}=""' for i in range(1001))
    with pytest.raises(PmtaApiError) as err:
        parse_queues(f"<rsp><data><queue {attrs}/></data><succ/></rsp>".encode(), "xml")
    assert err.value.reason == "parse" and "more than 1,000 elements" in str(err.value)

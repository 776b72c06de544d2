"""A hostile PMTA management API (or whatever answers at pmta.url): absurd numbers, a DTD, endless label values,
redirects elsewhere. Whatever it sends, /metrics is served, bounded, and the poll counts what it refused."""

from __future__ import annotations

import json
import logging
import math
import time
import tracemalloc

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter import labelcap, pmta_api
from exporter import queues as queues_mod
from exporter.config import PmtaApiConfig
from exporter.labelcap import LabelCap
from exporter.pmta_api import PmtaApiClient, PmtaApiError, QueueTotals, StatusInfo, parse_queues, parse_status
from exporter.queues import QueuePoller, Snapshot

BIG = int("9" * 400)


def _isp(domain: str) -> str:
    return domain.split(".")[0]


def _status(smtp: str = "<rcp>10</rcp><dom>2</dom><kb>4.0</kb>", more: str = "") -> bytes:
    return (f"<rsp><data><status><queue><smtp>{smtp}</smtp>{more}</queue><conn><smtpOut><cur>2</cur></smtpOut>"
            "</conn></status></data><succ/></rsp>").encode()


def _queues(*rows: tuple[str, object, object], total: object = None) -> bytes:
    items = "".join(f"<queue><name>{n}</name><rcp>{r}</rcp><kb>{k}</kb><conn>1</conn></queue>" for n, r, k in rows)
    tail = "" if total is None else f"<totalRcp>{total}</totalRcp>"
    return f"<rsp><data>{items}{tail}</data><succ/></rsp>".encode()


def _vmtas(*names: str) -> bytes:
    return ("<rsp><data>" + "".join(f"<vmta><name>{n}</name><rcp>1</rcp></vmta>" for n in names)
            + "</data><succ/></rsp>").encode()


async def _poll(answers: dict[str, bytes | int], *, per_vmta: bool = False, fmt: str = "xml",
                registry: CollectorRegistry | None = None, poller: QueuePoller | None = None) -> QueuePoller:
    """One poll against a PMTA answering `answers[path or queue=]` (an int: that HTTP status)."""
    def answer(request: httpx.Request) -> httpx.Response:
        got = answers.get(request.url.params.get("queue") or request.url.path, 404)
        return httpx.Response(got) if isinstance(got, int) else httpx.Response(200, content=got)

    if poller is None:
        poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=per_vmta, format=fmt),
                             registry or CollectorRegistry(), _isp)
    async with PmtaApiClient(poller.config, transport=httpx.MockTransport(answer)) as client:
        await poller.poll_once(client)
    return poller


def _series(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for m in registry.collect() for s in m.samples if s.name == name}


def _errors(registry: CollectorRegistry) -> dict[str, float | None]:
    return {r: registry.get_sample_value("watchtower_pmta_api_errors_total", {"reason": r})
            for r in pmta_api.API_ERROR_REASONS}


NO_ERRORS = {"timeout": 0.0, "connect": 0.0, "http_status": 0.0, "parse": 0.0}


# --- 1. a number no gauge can hold in /status --------------------------------------------------------
async def test_a_status_amount_no_gauge_can_hold_is_no_series_and_the_scrape_is_served() -> None:
    """`<kb>1e306</kb>` in /status: `round(kb * 1024)` raised OverflowError in the collector and every /metrics scrape
    was an HTTP 500 (the file-tailing metrics lost with it). That amount is no amount: no series, all else served."""
    body = _status("<rcp>10</rcp><dom>2</dom><kb>1e306</kb>")
    assert parse_status(body, "xml").queue == {"smtp": QueueTotals(10, 2, None)}
    registry = CollectorRegistry()
    await _poll({"/status": body, "/queues": _queues()}, registry=registry)
    text = generate_latest(registry).decode()
    assert "pmta_status_queue_bytes{" not in text
    assert _series(registry, "pmta_status_queue_recipients") == {("smtp",): 10.0}
    assert _series(registry, "pmta_status_queue_domains") == {("smtp",): 2.0}
    assert registry.get_sample_value("watchtower_pmta_api_up") == 1


def test_the_collector_never_raises_on_a_value_it_is_handed() -> None:
    """Whatever a snapshot holds (a value built past the parser's bounds), collect() serves the finite values and
    leaves out the others: a scrape must not fail on one number."""
    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta"), registry, _isp)
    status = StatusInfo(queue={"smtp": QueueTotals(10, 2, 1e306), "pipe": QueueTotals(3, 1, math.inf)},
                        conn_in=5, conn_out=None)
    poller.snapshot = Snapshot(time.monotonic(), up=True, status=status, coverage=math.nan,
                               queues={("v1", "gmail"): [math.inf, 2048.0, math.nan, 0.0, 0.0, 0.0]},
                               unlisted={"v1": math.inf, "v2": 4.0})
    generate_latest(registry)
    assert _series(registry, "pmta_status_queue_bytes") == {}
    assert _series(registry, "pmta_status_queue_recipients") == {("pipe",): 3.0, ("smtp",): 10.0}
    assert _series(registry, "pmta_queue_recipients") == {}
    assert _series(registry, "pmta_queue_bytes") == {("v1", "gmail"): 2048.0}
    assert _series(registry, "pmta_queue_connections") == {}
    assert _series(registry, "pmta_queue_unlisted_recipients") == {("v2",): 4.0}
    assert _series(registry, "watchtower_pmta_queue_coverage_ratio") == {}


# --- 2. a DTD ------------------------------------------------------------------------------------------
def _quadratic(refs: int) -> bytes:
    """One 290-byte internal entity referenced `refs` times: under expat's amplification limit, yet 8 MiB of it
    expanded to 3 GB of memory."""
    return (b'<!DOCTYPE rsp [<!ENTITY a "' + b"A" * 290 + b'">]><rsp><succ/><data><queue><name>x.com/v</name><rcp>'
            + b"&a;" * refs + b"</rcp></queue></data></rsp>")


@pytest.mark.parametrize("body", [
    _quadratic(350_000),
    b'<?xml version="1.0"?><!DOCTYPE rsp [<!ENTITY x SYSTEM "file:///etc/passwd">]><rsp><succ/><data><status>'
    b"<status>&x;</status></status></data></rsp>",
    b'<!DOCTYPE rsp><rsp><succ/><data><status><status>running</status></status></data></rsp>',
], ids=["internal-entity", "external-entity", "bare-doctype"])
def test_an_answer_with_a_dtd_is_refused_before_anything_is_expanded(body: bytes) -> None:
    """PMTA never sends a DTD: one is a parse error naming why, refused at its first bytes (no entity expanded)."""
    tracemalloc.start()
    try:
        with pytest.raises(PmtaApiError) as err:
            pmta_api.parse_envelope(body, "xml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.reason == "parse"
    assert str(err.value) == "a DTD (<!DOCTYPE rsp ...>), which PMTA never sends: refused unexpanded"
    assert peak < len(body) + 2 * 1024 * 1024, peak


async def test_a_long_answer_with_a_dtd_is_a_counted_parse_error_in_the_worker_thread_too(
        caplog: pytest.LogCaptureFixture) -> None:
    """Past THREAD_PARSE_BYTES the parse runs in a thread that a deadline cannot cancel: it must refuse as early
    (unexpanded, the entity would be 290 MB; tracemalloc sees the worker thread's allocations too)."""
    body = _quadratic(1_000_000)
    assert len(body) > pmta_api.THREAD_PARSE_BYTES
    registry = CollectorRegistry()
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="watchtower.queues"):
            await _poll({"/status": _status(), "/queues": body}, registry=registry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body), peak  # the answer and a copy or two of it, nothing expanded
    assert [r.getMessage().split("; first parse: ")[1] for r in caplog.records] == [
        "a DTD (<!DOCTYPE rsp ...>), which PMTA never sends: refused unexpanded"]
    assert _errors(registry) == {**NO_ERRORS, "parse": 1.0}
    assert registry.get_sample_value("watchtower_pmta_api_partial") == 1


def test_doctype_as_text_is_only_text() -> None:
    """A remote server's reply quoted in a queue's text (`&lt;!DOCTYPE html&gt;`) is no DTD."""
    body = (b"<rsp><data><queue><name>gmail.com/v1</name><rcp>3</rcp><lastError>&lt;!DOCTYPE html&gt; 550"
            b"</lastError></queue></data><succ/></rsp>")
    assert [(q.name, q.rcp) for q in parse_queues(body, "xml").queues] == [("gmail.com/v1", 3)]


# --- 3. numbers outside any sane range in a listing ----------------------------------------------------
def test_every_number_read_is_bounded_to_a_sane_finite_range() -> None:
    """`to_int` returned a 400-digit int as-is and negatives passed: nothing downstream may overflow or go below 0."""
    assert [pmta_api.to_int(v) for v in (BIG, -500, "-1", "1e306", 7, "12", pmta_api.MAX_NUMBER)] == \
        [0, 0, 0, 0, 7, 12, int(pmta_api.MAX_NUMBER)]
    assert [pmta_api.to_float(v) for v in (BIG, -3.0, "1e306", "inf", "1.5", pmta_api.MAX_NUMBER + 1)] == \
        [0.0, 0.0, 0.0, 0.0, 1.5, 0.0]


def test_a_total_outside_the_range_is_no_total() -> None:
    """A `totalRcp` of 400 digits broke totals_are_global (float overflow); a negative one is no total either."""
    for total in (BIG, -5):
        body = json.dumps({"status": "success", "data": {
            "totalRcp": total, "totalQueuesWithRcp": total, "queue": [{"name": "gmail.com/v1", "rcp": 5}]}}).encode()
        listing = parse_queues(body, "json")
        assert (listing.total_rcp, listing.total_queues, listing.queues[0].rcp) == (None, None, 5)


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_absurd_numbers_in_a_listing_cost_that_number_not_the_poll(
        fmt: str, caplog: pytest.LogCaptureFixture) -> None:
    """A huge `kb` (1e306) or `rcp` (400 digits) threw the whole poll away with an OverflowError traceback and no
    error counted; `rcp` -500 was served as pmta_queue_recipients -500 and coverage as -50. A `kb` that is not an
    amount in range counts as 0 bytes for its queue; an `rcp` that is not a count leaves its VMTA without queue gauges
    for the poll (a 0 would read as an empty queue to the stall alerts), a parse error each, `partial` 1."""
    rows = [("gmail.com/v1", -500, -3.0), ("yahoo.com/v2", "NaN", "inf"), ("aol.com/v3", 5, "1e306"),
            ("aol.com/v4", BIG, 2.0), ("aol.com/v5", 5, "1e308"), ("msn.com/v5", 5, "1e308")]
    if fmt == "xml":
        listing = _queues(*rows, total=15)
    else:
        listing = json.dumps({"status": "success", "data": {"totalRcp": 15, "queue": [
            {"name": n, "rcp": r if not isinstance(r, str) else r, "kb": k} for n, r, k in rows]}}).encode()
    status = _status() if fmt == "xml" else json.dumps({"status": "success", "data": {"status": {
        "queue": {"smtp": {"rcp": 10, "dom": 2, "kb": 4.0}}}}}).encode()
    registry = CollectorRegistry()
    with caplog.at_level(logging.ERROR, logger="watchtower.queues"):
        await _poll({"/status": status, "/queues": listing}, fmt=fmt, registry=registry)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert _series(registry, "pmta_queue_recipients") == {("v3", "aol"): 5.0, ("v5", "aol"): 5.0, ("v5", "msn"): 5.0}
    assert _series(registry, "pmta_queue_bytes") == {("v3", "aol"): 0.0, ("v5", "aol"): 0.0, ("v5", "msn"): 0.0}
    assert registry.get_sample_value("watchtower_pmta_queue_coverage_ratio") == 1.0
    assert registry.get_sample_value("watchtower_pmta_api_up") == 1
    assert registry.get_sample_value("watchtower_pmta_api_partial") == 1
    assert _errors(registry) == {**NO_ERRORS, "parse": 3.0}


# --- 4. label values of any length --------------------------------------------------------------------
def test_a_label_value_over_the_length_bound_is_overflow_and_never_admitted() -> None:
    cap = LabelCap("vmta", 10)
    longest = "v" * labelcap.MAX_LABEL_VALUE_CHARS
    assert cap(longest) == longest
    assert cap(longest + "x") == "overflow"
    assert cap.admitted == {longest}


async def test_vmta_names_of_60_kb_become_overflow_and_the_log_quotes_them_clipped(
        caplog: pytest.LogCaptureFixture) -> None:
    """VMTA names of 60 KB each (100 new ones a poll) grew /metrics to 216 MB and logged 2 MB WARNING lines."""
    names = [f"v{i}" + "x" * 60_000 for i in range(3)]
    answers: dict[str, bytes | int] = {"/status": _status("<rcp>12</rcp>"), "/vmtas": _vmtas("ok", *names),
                                       "/queues": _queues(("gmail.com/ok", 3, 1.0), total=12),
                                       "*/ok": _queues(("gmail.com/ok", 3, 1.0), total=3),
                                       f"*/{names[0]}": _queues((f"gmail.com/{names[0]}", 4, 1.0), total=4),
                                       f"*/{names[1]}": _queues((f"yahoo.com/{names[1]}", 5, 1.0), total=5)}
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="watchtower.queues"):
        poller = await _poll(answers, per_vmta=True, registry=registry)
    # the third name, `overflow` too, was not read: the label is absent, not the sum of the other two
    assert _series(registry, "pmta_queue_recipients") == {("ok", "gmail"): 3.0}
    assert len(generate_latest(registry)) < 20_000
    (line,) = [r.getMessage() for r in caplog.records]
    assert len(line) < 1000, len(line)
    assert "VMTAs without gauges: v2" + "x" * 62 + "... (60002 characters)" in line
    answers[f"*/{names[2]}"] = _queues(total=0)
    await _poll(answers, poller=poller)
    assert _series(registry, "pmta_queue_recipients") == {
        ("ok", "gmail"): 3.0, ("overflow", "gmail"): 4.0, ("overflow", "yahoo"): 5.0}
    assert poller.vmta_cap.admitted == {"ok"}
    poller.close(wait=True)


async def test_the_status_type_label_is_capped_in_number_and_length() -> None:
    """20,000 delivery types in /status were 20,001 series of pmta_status_queue_recipients."""
    many = "".join(f"<t{i}><rcp>1</rcp><dom>1</dom><kb>1.0</kb></t{i}>" for i in range(20_000))
    long_type = "t" + "y" * 300
    more = many + f"<{long_type}><rcp>7</rcp></{long_type}>"
    registry = CollectorRegistry()
    await _poll({"/status": _status("<rcp>10</rcp>", more), "/queues": _queues()}, registry=registry)
    served = _series(registry, "pmta_status_queue_recipients")
    others = queues_mod.MAX_STATUS_TYPES - len(queues_mod.STATUS_TYPES)  # PMTA's own types are always named
    assert served == {("smtp",): 10, **{(f"t{i}",): 1 for i in range(others)}, ("overflow",): 20_000 - others + 7}
    assert len(served) == 2 + others == 26


# --- 5. redirects elsewhere ----------------------------------------------------------------------------
@pytest.mark.parametrize(("location", "origin"), [
    ("https://other-host.example:8443/status?format=xml", "https://other-host.example:8443"),
    ("http://admin:S3cret@pmta.evil.example:8080/status", "http://pmta.evil.example:8080"),
    ("http://pmta:1234/status", "http://pmta:1234"),
    ("//elsewhere.example/status", "http://elsewhere.example"),
])
async def test_a_redirect_to_another_server_is_refused_naming_its_origin(location: str, origin: str) -> None:
    """`follow_redirects=True` served another server's answer as PMTA's. Only the same origin (and its https) is
    followed; another is an `http_status` error naming where it pointed, never with its credentials."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "pmta" and request.url.port == 8080:
            return httpx.Response(302, headers={"Location": location})
        return httpx.Response(200, content=_status())

    async with PmtaApiClient(PmtaApiConfig(url="http://pmta:8080", username="u", password="p"),
                             transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(PmtaApiError) as err:
            await client.status()
    assert seen == ["http://pmta:8080/status?format=xml"]
    assert err.value.reason == "http_status"
    assert str(err.value) == (f"GET /status: HTTP 302 redirects to another server, {origin}: not followed "
                              "(pmta.url must name PMTA itself)")
    assert "S3cret" not in str(err.value)


async def test_a_redirect_refused_is_counted_under_http_status() -> None:
    registry = CollectorRegistry()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "http://elsewhere.example/"})

    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=False), registry, _isp)
    async with PmtaApiClient(poller.config, transport=httpx.MockTransport(answer)) as client:
        assert not await poller.poll_once(client)
    assert _errors(registry) == {**NO_ERRORS, "http_status": 2.0}


# --- a change of cause while down -----------------------------------------------------------------------
async def test_a_new_cause_while_the_api_stays_down_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    """Down for one reason, then another: only the first was logged, the operator kept chasing the old cause."""
    answers: list[int | Exception] = [httpx.ConnectError("refused"), 403, 403]

    def answer(request: httpx.Request) -> httpx.Response:
        got = answers[0]
        if isinstance(got, Exception):
            raise got
        return httpx.Response(got)

    poller = QueuePoller(PmtaApiConfig(url="http://pmta", per_vmta_queries=False), CollectorRegistry(), _isp)
    with caplog.at_level(logging.WARNING, logger="watchtower.queues"):
        async with PmtaApiClient(poller.config, transport=httpx.MockTransport(answer)) as client:
            for _ in range(3):
                await poller.poll_once(client)
                answers.pop(0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "(connect: 2)" in lines[0] and "(http_status: 2)" in lines[1]


def test_the_docs_state_the_bounds_the_code_applies() -> None:
    """docs/metrics.md and docs/config.md are generated from these texts: they must name the bounds in force."""
    from exporter.config import LabelsConfig
    from exporter.metrics import LABEL_VALUES

    chars = f"longer than {labelcap.MAX_LABEL_VALUE_CHARS} characters"
    assert chars in LABEL_VALUES["vmta"] and chars in LABEL_VALUES["vmta_pool"]
    assert f"up to {queues_mod.MAX_STATUS_TYPES} types" in LABEL_VALUES["type"]
    assert f"({', '.join(queues_mod.STATUS_TYPES)}, and the first others" in LABEL_VALUES["type"]
    for key in ("max_vmtas", "max_pools"):
        assert f"longer than {labelcap.MAX_LABEL_VALUE_CHARS} characters" in LabelsConfig.model_fields[key].description

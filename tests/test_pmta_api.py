"""Parsing PMTA's management API (fixtures: verbatim samples and the UNCERTAIN shapes) and the HTTP client."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import pytest

from exporter.config import PmtaApiConfig
from exporter.pmta_api import (
    PmtaApiClient,
    PmtaApiError,
    QueueInfo,
    QueueTotals,
    parse_domains,
    parse_queues,
    parse_status,
    parse_vmtas,
    to_bool,
)

DATA = Path(__file__).parent / "testdata" / "pmta_api"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize("name", ["status-5.0r1.xml", "status-5.0r1-oneline.xml"])
def test_status_xml_verbatim_sample(name: str) -> None:
    st = parse_status(fixture(name), "xml")
    assert st.version == "5.0r1" and st.state == "running"
    assert st.queue["smtp"] == QueueTotals(rcp=132, dom=92, kb=7944.7)
    assert st.queue["pipe"] == QueueTotals(0, 0, 0.0)
    assert list(st.queue) == ["smtp", "pipe", "discard", "file", "alias", "bounceProcessor", "feedbackLoopProcessor"]
    assert (st.conn_in, st.conn_out, st.spool_files, st.smtp_rcp) == (3, 11, 134, 132)


def test_status_json_verbatim_sample() -> None:
    st = parse_status(fixture("status-5.0b1.json"), "json")
    assert st.version == "5.0b1"
    assert st.queue["smtp"] == QueueTotals(rcp=805, dom=226, kb=5.5)
    assert st.queue["discard"].kb == 0.0
    assert (st.conn_in, st.conn_out, st.spool_files) == (1, 0, 504)


def test_status_35_era_shape_without_newer_elements() -> None:
    body = (b"<rsp><data><mta><product><name>PowerMTA</name><version>3.5r16</version></product></mta><status>"
            b"<conn><smtpIn><cur>2</cur></smtpIn></conn><queue><smtp><rcp>7</rcp><dom>2</dom><kb>1.5</kb></smtp>"
            b"<gmImprinter><rcp>0</rcp><dom>0</dom><kb>0.0</kb></gmImprinter></queue></status></data><succ/></rsp>")
    st = parse_status(body, "xml")
    assert st.queue["gmImprinter"].rcp == 0 and st.smtp_rcp == 7
    assert (st.conn_in, st.conn_out, st.spool_files, st.state) == (2, None, None, "")


def test_queues_reconstructed_xml() -> None:
    ql = parse_queues(fixture("queues-reconstructed.xml"), "xml")
    assert ql.queues == [
        QueueInfo("aol.com/23.236.100.164", 77, 769.4, 0, False, "normal", "2014-09-20 18:25:32"),
        QueueInfo("yahoo.com/23.236.101.246", 1203, 11954.0, 2, True, "backoff", "2014-09-20 18:30:00"),
    ]
    assert (ql.total_rcp, ql.total_queues) == (61078, 1428)
    assert ql.queues[1].backoff and ql.queues[1].vmta == "23.236.101.246" and ql.queues[1].domain == "yahoo.com"


def test_queues_json_variants() -> None:
    single = parse_queues(fixture("queues-single-object.json"), "json")
    assert single.queues == [QueueInfo("gmail.com/vmta-03", 41250, 2230415.5, 1, False, "backoff",
                                       "2024-06-12 09:41:07")]
    plural = parse_queues(fixture("queues-plural-array.json"), "json")
    assert [(q.name, q.rcp, q.kb, q.conn, q.paused, q.backoff) for q in plural.queues] == [
        ("gmail.com/vmta-01", 12, 0.0, 3, False, False), ("hotmail.com/vmta-01", 7, 5.5, 1, True, True)]
    assert plural.total_rcp == 19
    listed = parse_queues(fixture("queues-data-list.json"), "json")
    assert [(q.name, q.paused, q.backoff) for q in listed.queues] == [("yahoo.com/vmta-05", True, True)]
    assert listed.total_rcp is None
    empty = parse_queues(fixture("queues-empty.xml"), "xml")
    assert empty.queues == [] and empty.total_rcp == 0


def test_vmtas_and_domains() -> None:
    assert [(v.name, v.rcp, v.dom, v.conn, v.kb) for v in parse_vmtas(fixture("vmtas-munin.xml"), "xml")] == [
        ("vmta572", 18, 13, 16, 0.1), ("vmta103", 8, 1, 8, 0.1)]
    only = parse_vmtas(fixture("vmtas-name-rcp-only.xml"), "xml")
    assert [(v.name, v.rcp, v.kb, v.conn) for v in only] == [("pmta-vmta47", 2054, 0.0, 0)]
    assert [(d.name, d.rcp, d.kb, d.conn) for d in parse_domains(fixture("domains.xml"), "xml")] == [
        ("gmail.com", 123, 456.7, 3), ("test18.port25.com", 3, 30.6, 0)]


@pytest.mark.parametrize(("name", "fmt", "message"), [
    ("error-no-succ.xml", "xml", "no <succ/>): invalid queue name"),
    ("error-status.json", "json", "status 'error'): access denied"),
    ("error-transmissions-shape.json", "json", "Unauthorized"),
    ("https-required.html", "xml", "unexpected XML root <html>"),
    ("status-5.0b1.json", "xml", "not XML"),
    ("status-5.0r1.xml", "json", "not JSON"),
])
def test_failures_are_parse_errors(name: str, fmt: str, message: str) -> None:
    with pytest.raises(PmtaApiError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_queues(fixture(name), fmt)
    assert err.value.reason == "parse"


def test_garbage_and_truncated_bodies() -> None:
    for body in (b"", b"\x00\xff", b"<rsp><data><queue><name>gmail.com/vm", b"[1, 2]", b'{"data": {}}x'):
        for fmt in ("xml", "json"):
            with pytest.raises(PmtaApiError) as err:
                parse_queues(body, fmt)
            assert err.value.reason == "parse"
    with pytest.raises(PmtaApiError, match="without a <status>"):
        parse_status(b"<rsp><data/><succ/></rsp>", "xml")


def test_boolean_forms() -> None:
    assert [to_bool(v) for v in ("yes", "YES", "true", "1", 1, True, "on")] == [True] * 7
    assert [to_bool(v) for v in ("no", "false", "0", 0, False, "", None, "off")] == [False] * 8


# --- the HTTP client ---------------------------------------------------------------------------
def mock(handler) -> httpx.MockTransport:  # type: ignore[no-untyped-def]
    return httpx.MockTransport(handler)


async def test_client_sends_key_auth_and_unescaped_queue_pattern(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=fixture("queues-reconstructed.xml"), headers={"content-type": "text/html"})

    key_file = tmp_path / "key"
    key_file.write_text("A" * 40 + "\n")
    cfg = PmtaApiConfig(url="https://pmta.example:8080/", api_key_file=key_file, username="mon", password="pw")
    async with PmtaApiClient(cfg, transport=mock(handler)) as api:
        ql = await api.queues("*/vmta-03")
    assert len(ql.queues) == 2
    req = seen[0]
    assert str(req.url) == "https://pmta.example:8080/queues?format=xml&queue=*/vmta-03"
    assert req.headers["x-api-key"] == "A" * 40
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"mon:pw").decode()
    assert req.headers["user-agent"].startswith("pmta-watchtower/")


async def test_client_json_format_and_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/status":
            return httpx.Response(200, content=fixture("status-5.0b1.json"), headers={"content-type": "text/plain"})
        if request.url.path == "/vmtas":
            return httpx.Response(403, text="access is forbidden")
        raise httpx.ConnectError("connection refused")

    async with PmtaApiClient(PmtaApiConfig(url="http://pmta", format="json"), transport=mock(handler)) as api:
        assert (await api.status()).smtp_rcp == 805
        with pytest.raises(PmtaApiError, match="HTTP 403 .access refused") as e403:
            await api.vmtas()
        with pytest.raises(PmtaApiError, match="ConnectError") as econn:
            await api.domains()
    assert (e403.value.reason, econn.value.reason) == ("http_status", "connect")


async def test_client_timeout_is_a_hard_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with PmtaApiClient(PmtaApiConfig(url="http://pmta", timeout=0.05), transport=mock(slow)) as api:
        with pytest.raises(PmtaApiError, match="no answer within 0.05s") as err:
            await api.status()
    assert err.value.reason == "timeout"


async def test_unreadable_key_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PmtaApiError, match="cannot read api_key_file"):
        PmtaApiClient(PmtaApiConfig(url="http://pmta", api_key_file=tmp_path / "missing"))


async def test_large_bodies_parse_off_the_event_loop() -> None:
    items = "".join(f"<queue><name>d{i}.example/vmta-01</name><rcp>{i}</rcp><kb>1.0</kb><conn>0</conn>"
                    "<paused>no</paused><mode>normal</mode></queue>" for i in range(8000))
    body = f"<rsp><data>{items}</data><succ/></rsp>".encode()
    assert len(body) > 256 * 1024
    async with PmtaApiClient(PmtaApiConfig(url="http://pmta"),
                             transport=mock(lambda r: httpx.Response(200, content=body))) as api:
        ql = await api.queues()
    assert len(ql.queues) == 8000 and ql.queues[-1].rcp == 7999

"""Parsing PMTA's management API (fixtures: verbatim samples and the UNCERTAIN shapes) and the HTTP client."""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import socket
import struct
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter import pmta_api
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
from exporter.queues import QueuePoller

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


@pytest.mark.parametrize(("body", "fmt"), [
    (b"<rsp><error>" + b"x" * 190 + b" jane.canary.doe@gmail.com</error></rsp>", "xml"),
    (b'{"status": "error", "message": "' + b"x" * 190 + b' jane.canary.doe@gmail.com"}', "json"),
    (b"x" * 50 + b" jane.canary.doe@gmail.com", "xml"),
    (b"x" * 50 + b" jane.canary.doe@gmail.com", "json"),
])
def test_an_error_quoting_pmtas_answer_never_cuts_a_local_part_from_its_at(body: bytes, fmt: str) -> None:
    """The error texts were cut at 200 (60) characters and redacted later, by the log handler: cut inside the local
    part, `jane.canary.do` had no `@` left to be recognised by and was logged (privacy review 2026-12-06)."""
    with pytest.raises(PmtaApiError) as err:
        parse_queues(body, fmt)
    assert "jane" not in str(err.value) and "..." in str(err.value), str(err.value)


def test_garbage_and_truncated_bodies() -> None:
    for body in (b"", b"\x00\xff", b"<rsp><data><queue><name>gmail.com/vm", b"[1, 2]", b'{"data": {}}x'):
        for fmt in ("xml", "json"):
            with pytest.raises(PmtaApiError) as err:
                parse_queues(body, fmt)
            assert err.value.reason == "parse"
    with pytest.raises(PmtaApiError, match="without a <status>"):
        parse_status(b"<rsp><data/><succ/></rsp>", "xml")


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_an_answer_nested_past_the_recursion_limit_is_a_parse_error_not_a_bug(fmt: str) -> None:
    """100,000 nested elements or arrays raised RecursionError out of the parser: the poller logged it as a bug
    with a traceback, where every other answer PMTA should not give is a counted `parse` error of one line."""
    depth = 100_000
    body = (b"<rsp><data>" + b"<a>" * depth + b"</a>" * depth + b"</data><succ/></rsp>" if fmt == "xml" else
            b'{"status": "success", "data": ' + b"[" * depth + b"]" * depth + b"}")
    for parse in (parse_queues, parse_status):
        with pytest.raises(PmtaApiError, match="nested deeper than") as err:
            parse(body, fmt)
        assert err.value.reason == "parse"


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


# --- a misbehaving PMTA on a real loopback socket ----------------------------------------------
QUEUE_XML = ("<queue><name>{domain}/{vmta}</name><rcp>{rcp}</rcp><kb>{kb}</kb><conn>1</conn><paused>no</paused>"
             "<mode>normal</mode></queue>")
STATUS_XML = (b"<rsp><data><status><queue><smtp><rcp>100</rcp><dom>3</dom><kb>6.0</kb></smtp></queue>"
              b"<conn><smtpOut><cur>4</cur></smtpOut></conn></status></data><succ/></rsp>")
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE rsp [<!ENTITY a "aaaaaaaaaa">'
                  + b"".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">'.encode()
                             for p, c in zip("abcdefgh", "bcdefghi", strict=True))
                  + b"]><rsp><data><queue><name>&i;</name></queue></data><succ/></rsp>")
HUGE = 64 * 1024 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """16 MiB of zeros in 16 KiB: compressed once, never on the server's (shared) event loop."""
    return gzip.compress(b"\0" * (16 * 1024 * 1024), compresslevel=1)


def xml_queues(*rows: tuple[str, str, object, object]) -> bytes:
    items = "".join(QUEUE_XML.format(domain=d, vmta=v, rcp=r, kb=k) for d, v, r, k in rows)
    return f"<rsp><data>{items}</data><succ/></rsp>".encode()


class RawPmta:
    """Just enough HTTP/1.1 on a loopback socket to misbehave as a broken PMTA (or a proxy in front of it)
    might. The behaviour is chosen by the VMTA of `queue=*/<mode>`; `/status` and `/vmtas` answer well,
    and `/vmtas` lists `vmtas`. `sent[mode]` is how many body bytes were written before the peer left."""

    def __init__(self, vmtas: list[str] | None = None) -> None:
        self.vmtas = vmtas or []
        self.sent: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> RawPmta:
        gzip_bomb()
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        self.closing.set()  # the hanging handlers return (cancelling them makes asyncio log tracebacks)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            path, _, query = target.partition("?")
            params = dict(parse_qsl(query))
            mode = params.get("queue", "").removeprefix("*/") or path.strip("/")
            await self._answer(mode, params.get("format", "xml"), writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, body: bytes, status: str = "200 OK", ctype: str = "text/html",
                    extra: str = "") -> None:
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
                     "Connection: close\r\n\r\n".encode() + body)
        await writer.drain()

    async def _answer(self, mode: str, fmt: str, w: asyncio.StreamWriter) -> None:
        if mode == "status":
            await self._send(w, STATUS_XML)
        elif mode == "vmtas":
            await self._send(w, b"<rsp><data>" + b"".join(f"<vmta><name>{v}</name><rcp>1</rcp></vmta>".encode()
                                                         for v in self.vmtas) + b"</data><succ/></rsp>")
        elif mode == "queues":  # the top-N list: only the well-behaved VMTAs' queues
            await self._send(w, xml_queues(*[("gmail.com", v, 5, 1.0) for v in self.vmtas if v.startswith("ok")]))
        elif mode.startswith("ok"):
            await self._send(w, xml_queues(("gmail.com", mode, 5, 1.0), ("yahoo.com", mode, 2, 0.5)))
        elif mode == "png":  # a right body under a wrong content type
            await self._send(w, xml_queues(("gmail.com", mode, 3, 1.0)), ctype="image/png")
        elif mode == "absurd":  # numbers no gauge can hold
            await self._send(w, xml_queues(("gmail.com", mode, "1e400", "inf"), ("yahoo.com", mode, "9" * 500, "nan")))
        elif mode == "garbled":
            await self._send(w, b'<rsp><data><queue><name>gmail.com/vm\x00\xff{"data": [')
        elif mode == "deep":
            body = (b"<rsp><data>" + b"<q>" * 50_000 + b"</q>" * 50_000 + b"</data><succ/></rsp>" if fmt == "xml"
                    else b'{"status": "success", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
            await self._send(w, body)
        elif mode == "laughs":
            await self._send(w, BILLION_LAUGHS)
        elif mode == "http500":
            await self._send(w, b"internal error", status="500 Internal Server Error")
        elif mode == "reset":
            w.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                            struct.pack("ii", 1, 0))
            w.transport.abort()
        elif mode == "truncated":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n<rsp><data>")
            await w.drain()
        elif mode == "nothttp":
            w.write(b"SSH-2.0-OpenSSH_9.2p1\r\n")
            await w.drain()
        elif mode == "redirect":
            await self._send(w, b"", status="302 Found", extra="Location: /queues?format=xml&queue=*/redirect\r\n")
        elif mode == "silent":
            await self.closing.wait()
        elif mode == "slowloris":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not self.closing.is_set():
                w.write(b"<")
                await w.drain()
                await asyncio.sleep(0.02)
        elif mode in ("endless", "announced"):
            length = "Transfer-Encoding: chunked" if mode == "endless" else f"Content-Length: {100 * HUGE}"
            w.write(f"HTTP/1.1 200 OK\r\n{length}\r\n\r\n".encode())
            chunk = b"<" * 65536
            self.sent[mode] = 0
            while self.sent[mode] < HUGE:
                w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if mode == "endless" else chunk)
                await w.drain()
                self.sent[mode] += len(chunk)
        elif mode == "gzipbomb":
            await self._send(w, gzip_bomb(), extra="Content-Encoding: gzip\r\n")
        else:
            raise AssertionError(f"unknown mode {mode}")


BAD_ANSWERS: dict[str, str] = {  # mode -> reason of the PmtaApiError
    "garbled": "parse", "deep": "parse", "laughs": "parse", "endless": "parse", "announced": "parse",
    "gzipbomb": "parse", "http500": "http_status", "reset": "connect", "truncated": "connect",
    "nothttp": "connect", "redirect": "connect", "silent": "timeout", "slowloris": "timeout",
}


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_whatever_pmta_answers_is_a_counted_error(fmt: str) -> None:
    """Before the fix: deep nesting raised RecursionError, an absurd number OverflowError, and a huge or
    endless body was read whole into memory (here: until the timeout) instead of being refused at the cap."""
    got = {}
    async with RawPmta() as pmta:
        slow = [m for m, r in BAD_ANSWERS.items() if r == "timeout"]  # the format does not matter to them
        for timeout, modes in ((0.3, slow if fmt == "xml" else []), (20, [m for m in BAD_ANSWERS if m not in slow])):
            async with PmtaApiClient(PmtaApiConfig(url=pmta.url, timeout=timeout, format=fmt)) as api:
                api.max_body = 1024 * 1024
                for mode in modes:
                    try:
                        await asyncio.wait_for(api.queues(f"*/{mode}"), timeout=60)  # liveness guard only
                        got[mode] = "no error"
                    except PmtaApiError as exc:
                        got[mode] = exc.reason
                absurd = None if fmt == "json" else await api.queues("*/absurd")
                png = None if fmt == "json" else await api.queues("*/png")
    assert got == (BAD_ANSWERS if fmt == "xml" else {m: r for m, r in BAD_ANSWERS.items() if m not in slow})
    assert pmta.sent["endless"] < HUGE and pmta.sent["announced"] < HUGE  # refused at the cap, not read whole
    if absurd is not None and png is not None:
        assert [(q.rcp, q.kb) for q in absurd.queues] == [(None, 0.0), (None, 0.0)]  # no count, no amount
        assert [(q.name, q.rcp) for q in png.queues] == [("gmail.com/png", 3)]


async def test_a_poll_over_every_bad_answer_keeps_the_good_vmtas_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """One poll in which each VMTA's query misbehaves differently: poll_once returns (never raises), the
    well-behaved VMTAs are exact, the others have no series, and each failure is counted once by reason.
    (Hanging answers are left to the tests above and in test_queues.py: one short timeout for all would
    also cut a slow good answer on a loaded machine.)"""
    monkeypatch.setattr(pmta_api, "MAX_BODY_BYTES", 1024 * 1024)
    bad = {m: r for m, r in BAD_ANSWERS.items() if r != "timeout"}
    vmtas = ["ok-1", "ok-2", "png", "absurd", *bad]
    registry = CollectorRegistry()
    async with RawPmta(vmtas) as pmta:
        poller = QueuePoller(PmtaApiConfig(url=pmta.url, timeout=20, poll_deadline=60), registry,
                             lambda d: d.split(".")[0])
        async with PmtaApiClient(poller.config) as client:
            assert await asyncio.wait_for(poller.poll_once(client), timeout=60)
    rcp = {(s.labels["vmta"], s.labels["isp"]): s.value
           for m in registry.collect() if m.name == "pmta_queue_recipients" for s in m.samples}
    assert rcp == {("ok-1", "gmail"): 5, ("ok-1", "yahoo"): 2, ("ok-2", "gmail"): 5, ("ok-2", "yahoo"): 2,
                   ("png", "gmail"): 3}  # absurd's recipient counts are none: no series, never 0
    want: dict[str, float] = {"timeout": 0, "connect": 0, "http_status": 0, "parse": 1}  # absurd's
    for reason in bad.values():
        want[reason] += 1
    assert {r: registry.get_sample_value("watchtower_pmta_api_errors_total", {"reason": r}) for r in want} == want
    assert registry.get_sample_value("watchtower_pmta_api_up") == 1
    assert registry.get_sample_value("watchtower_pmta_api_partial") == 1
    assert registry.get_sample_value("pmta_status_queue_recipients", {"type": "smtp"}) == 100


async def test_basic_auth_password_from_a_file(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=fixture("status-5.0r1.xml"))

    (tmp_path / "pw").write_text("s3cret\n")
    cfg = PmtaApiConfig(url="http://pmta", username="mon", password_file=tmp_path / "pw")
    async with PmtaApiClient(cfg, transport=mock(handler)) as api:
        await api.status()
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"mon:s3cret").decode()
    with pytest.raises(PmtaApiError, match="cannot read password_file"):
        PmtaApiClient(PmtaApiConfig(url="http://pmta", username="mon", password_file=tmp_path / "missing"))


@pytest.mark.parametrize("key", ["ca_file", "password_file", "api_key_file", "url"])
async def test_an_unusable_setting_is_a_config_error_naming_its_key(tmp_path: Path, key: str) -> None:
    """What check-config may let through (a file's content, a URL httpx refuses) fails building the client with
    a PmtaApiConfigError that starts with the key: the poller logs it as the operator's problem, not a bug."""
    from exporter.pmta_api import PmtaApiConfigError

    bad = tmp_path / "bad"
    bad.write_bytes(b"\xff\xfe not utf-8 and not PEM\n")
    settings = {"ca_file": {"url": "https://127.0.0.1:1", "ca_file": bad},
                "password_file": {"url": "http://127.0.0.1:1", "username": "u", "password_file": bad},
                "api_key_file": {"url": "http://127.0.0.1:1", "api_key_file": bad}}
    config = (PmtaApiConfig.model_construct(**{**PmtaApiConfig().model_dump(), "url": "http://[::1"}) if key == "url"
              else PmtaApiConfig(**settings[key]))
    with pytest.raises(PmtaApiConfigError) as err:
        PmtaApiClient(config)
    assert err.value.reason == "connect" and str(err.value).startswith(f"pmta.{key}: ")
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("base", "location", "keeps_key"), [
    ("http://pmta:8080", "https://pmta:8443", True),  # PMTA 5 sends http to https on the same host: the key goes along
    ("http://pmta:8080", "http://pmta:8080/other", True),
    ("http://pmta:8080", "https://other-host.example:8443", False),
    ("http://pmta:8080", "http://pmta.evil.example:8080", False),
    ("http://pmta:8080", "http://pmta:1234", False),  # another port: another server
    ("https://pmta:8443", "http://pmta:8080", False),  # a downgrade would send it in clear text
])
async def test_the_api_key_follows_a_redirect_only_to_the_same_origin_or_its_https(
        base: str, location: str, keeps_key: bool) -> None:
    """httpx drops Authorization on a redirect to another origin, not a custom header: the admin-level X-API-Key
    must not go to whatever host, port or scheme a redirect names. (Such a redirect is not followed at all now:
    test_pmta_api_hostile.py.)"""
    seen: list[tuple[str, str | None]] = []
    status = b"<rsp><data><status><status>running</status></status></data><succ/></rsp>"

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("x-api-key")))
        if len(seen) == 1:
            return httpx.Response(302, headers={"Location": location + request.url.raw_path.decode()})
        return httpx.Response(200, content=status)

    config = PmtaApiConfig(url=base, api_key="K" * 40)
    async with PmtaApiClient(config, transport=httpx.MockTransport(answer)) as client:
        if keeps_key:
            await client.status()
        else:
            with pytest.raises(PmtaApiError, match="redirects to another server"):
                await client.status()
    assert seen == [("pmta", "K" * 40), *([(httpx.URL(location).host, "K" * 40)] if keeps_key else [])]


@pytest.mark.parametrize("where", ["api_key", "api_key_file"])
def test_an_api_key_headers_cannot_carry_is_named_as_the_key_not_the_url(tmp_path: Path, where: str) -> None:
    key = "cl\u00e9_" + "a" * 40
    if where == "api_key":
        config = PmtaApiConfig(url="http://127.0.0.1:1", api_key=key)
    else:
        (tmp_path / "key").write_text(key + "\n", encoding="utf-8")
        config = PmtaApiConfig(url="http://127.0.0.1:1", api_key_file=tmp_path / "key")
    with pytest.raises(pmta_api.PmtaApiConfigError) as caught:
        PmtaApiClient(config)
    assert caught.value.key == where
    assert str(caught.value).startswith(f"pmta.{where}: ")
    assert "position 3" in str(caught.value) and "url" not in str(caught.value)
    assert key not in str(caught.value)  # a secret is never printed


@pytest.mark.parametrize(("url", "warned"), [
    ("http://pmta-01.example:8080", True), ("https://pmta-01.example:8080", False), ("http://127.0.0.1:8080", False),
])
def test_a_secret_sent_over_plain_http_to_another_host_is_warned_about(
        url: str, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="watchtower.pmta_api")
    PmtaApiClient(PmtaApiConfig(url=url, api_key="K" * 40))
    assert [r.getMessage() for r in caplog.records] == ([
        f"pmta.url {url} is plain http: the API key crosses the network in clear text on every poll "
        "(PMTA 5 serves https)"] if warned else [])
    assert "K" * 40 not in caplog.text


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("text", [b"421 Zur\xfcckgewiesen, bitte sp\xe4ter", b"421 try\x01 later\x1b[0m"])
def test_a_bad_byte_in_a_queue_event_text_costs_that_text_not_the_listing(fmt: str, text: bytes) -> None:
    """event/text is a remote server's reply, copied by PMTA: a Latin-1 byte or a control character in it must
    not make the whole /queues answer unusable (every queue gauge would go, poll after poll)."""
    if fmt == "xml":
        body = (b"<rsp><data><queue><name>web.de/vmta-01</name><rcp>9000</rcp><event><type>error</type><text>" + text
                + b"</text></event></queue><queue><name>gmail.com/vmta-02</name><rcp>500</rcp></queue></data><succ/>"
                b"</rsp>")
    else:
        body = (b'{"status": "success", "data": {"queue": [{"name": "web.de/vmta-01", "rcp": 9000, "event": '
                b'[{"type": "error", "text": "' + text + b'"}]}, {"name": "gmail.com/vmta-02", "rcp": 500}]}}')
    listing = parse_queues(body, fmt)
    assert [(q.name, q.rcp) for q in listing.queues] == [("web.de/vmta-01", 9000), ("gmail.com/vmta-02", 500)]


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_an_answer_cut_short_is_still_a_parse_error(fmt: str) -> None:
    body = b"<rsp><data><queue><name>web.de/vmta-01</name>" if fmt == "xml" else b'{"status": "success", "data": {'
    with pytest.raises(PmtaApiError) as caught:
        parse_queues(body, fmt)
    assert caught.value.reason == "parse"


@pytest.mark.parametrize("where", ["api_key", "api_key_file"])
def test_check_config_names_an_api_key_a_header_cannot_carry(tmp_path: Path, where: str, capsys) -> None:
    import yaml

    from exporter.cli import main

    key = "abc def" + "a" * 30
    pmta: dict[str, str] = {"url": "https://pmta:8080"}
    if where == "api_key":
        pmta["api_key"] = key
    else:
        (tmp_path / "key").write_text(key + "\n", encoding="utf-8")
        pmta["api_key_file"] = str(tmp_path / "key")
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"sources": [{"name": "acct", "paths": [str(tmp_path / "*.csv")]}],
                                   "state_dir": str(tmp_path / "state"), "pmta": pmta}))
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"pmta.{where}: the key has a character an HTTP header cannot carry at position 4" in err, err
    assert key not in err


async def test_a_rotated_api_key_or_password_file_is_used_at_the_next_poll(tmp_path: Path) -> None:
    """The key and password were read once, when the client was built: after a rotation the API stayed down (403)
    until a restart, though the preflight says the files are read on every poll."""
    keys: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append((request.headers.get("x-api-key", ""), request.headers.get("authorization", "")))
        return httpx.Response(200, content=fixture("queues-reconstructed.xml"), headers={"content-type": "text/html"})

    key_file, pw_file = tmp_path / "key", tmp_path / "pw"
    key_file.write_text("A" * 40 + "\n")
    pw_file.write_text("old\n")
    cfg = PmtaApiConfig(url="https://pmta.example:8080/", api_key_file=key_file, username="mon", password_file=pw_file)
    poller = QueuePoller(cfg, CollectorRegistry(), lambda domain: "other")
    async with PmtaApiClient(cfg, transport=mock(handler)) as api:
        await poller.poll_once(api)
        key_file.write_text("B" * 40 + "\n")
        pw_file.write_text("new\n")
        keys.clear()
        await poller.poll_once(api)
    basic = "Basic " + base64.b64encode(b"mon:new").decode()
    assert keys and set(keys) == {("B" * 40, basic)}


async def test_the_warning_of_a_failing_api_names_the_cause_not_only_its_class(caplog: pytest.LogCaptureFixture) -> None:
    """A 403 (this host not in PMTA's http-access) logged "3 of 3 requests failed (http_status: 3)" at WARNING; the
    hint saying what to change was at DEBUG only."""
    poller = QueuePoller(PmtaApiConfig(url="http://127.0.0.1:8080"), CollectorRegistry(), lambda domain: "other")
    async with PmtaApiClient(poller.config, transport=mock(lambda request: httpx.Response(403))) as api:
        with caplog.at_level("WARNING", logger="watchtower.queues"):
            assert not await poller.poll_once(api)
    (line,) = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
    assert "requests failed (http_status: 3)" in line
    assert "; first http_status: " in line and "http-access" in line


def test_a_status_total_pmta_gave_no_number_for_is_no_series_not_a_zero() -> None:
    """`<rcp>n/a</rcp>` (or a missing or negative one) was served as pmta_status_queue_recipients 0: an empty host
    queue to the critical PmtaDeliveryStalled, and 100% queue coverage."""
    body = (b"<rsp><data><status><queue><smtp><rcp>n/a</rcp><dom>-3</dom><kb>12.5</kb></smtp>"
            b"<pipe><rcp>7</rcp><dom>1</dom></pipe></queue></status></data><succ/></rsp>")
    status = parse_status(body, "xml")
    assert (status.queue["smtp"].rcp, status.queue["smtp"].dom, status.queue["smtp"].kb) == (None, None, 12.5)
    assert (status.queue["pipe"].rcp, status.queue["pipe"].dom, status.queue["pipe"].kb) == (7, 1, None)
    assert status.smtp_rcp is None


def test_connections_and_spool_files_pmta_gave_no_number_for_are_no_series_not_a_zero() -> None:
    """`<cur/>`, `<cur>n/a</cur>` or `<inUse/>` were served as 0: `pmta_status_connections{direction="out"} 0`
    tells the stall rules the host is not sending. A value that is not a count is no series, as for queue totals."""
    for cur, in_use in ((b"<cur/>", b"<inUse/>"), (b"<cur>n/a</cur>", b"<inUse>-1</inUse>")):
        body = (b"<rsp><data><status><conn><smtpIn>" + cur + b"</smtpIn><smtpOut>" + cur + b"</smtpOut></conn>"
                b"<spool><files>" + in_use + b"</files></spool></status></data><succ/></rsp>")
        status = parse_status(body, "xml")
        assert (status.conn_in, status.conn_out, status.spool_files) == (None, None, None)
    body = (b"<rsp><data><status><conn><smtpIn><cur>3</cur></smtpIn><smtpOut><cur>0</cur></smtpOut></conn>"
            b"<spool><files><inUse>12</inUse></files></spool></status></data><succ/></rsp>")
    status = parse_status(body, "xml")
    assert (status.conn_in, status.conn_out, status.spool_files) == (3, 0, 12)


def test_a_long_xml_answer_fed_in_pieces_parses_as_one_call_would() -> None:
    """Fed in FEED_BYTES pieces (so a 16 MiB queue list lets the event loop in): a multi-byte character and an
    element cut at a piece's edge parse as ET.fromstring parses them; an error is still a parse error."""
    import xml.etree.ElementTree as ET

    queues = "".join(f"<queue><name>d{i}.example/vmta-é{i % 7}</name><rcp>{i}</rcp></queue>" for i in range(4000))
    body = f"<rsp><data>{queues}</data><succ/></rsp>".encode()
    assert len(body) > 3 * pmta_api.FEED_BYTES
    fed = pmta_api._xml_root(body)
    whole = ET.fromstring(body)
    assert ET.tostring(fed) == ET.tostring(whole)
    with pytest.raises(PmtaApiError, match="not XML"):
        pmta_api.parse_envelope(body[:-10], "xml")


@pytest.mark.parametrize(("encoding", "reason"), [("gzip, gzip", "parse"), ("gzip", "parse"), ("br", "parse"),
                                                  ("corrupt", "parse")])
async def test_a_compressed_answer_is_decoded_against_the_cap_never_whole(encoding: str, reason: str) -> None:
    """httpx decodes each network chunk whole, one decoder per listed encoding: `gzip, gzip` on a few KB expanded to
    2 GiB before the cap was looked at (4 GiB of memory, the event loop frozen 12 s). Decoded here step by step, at
    most the cap plus one step is ever held; an encoding PMTA does not use is refused unread."""
    import tracemalloc

    inner = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    body = {"gzip, gzip": gzip.compress(inner, compresslevel=9), "gzip": inner, "br": b"\x1b\x03",
            "corrupt": inner[:20] + b"\xff" * 64}[encoding]

    def answer(request: httpx.Request) -> httpx.Response:
        sent = "gzip" if encoding == "corrupt" else encoding
        return httpx.Response(200, headers={"Content-Encoding": sent}, stream=httpx.ByteStream(body))

    async with PmtaApiClient(PmtaApiConfig(url="http://pmta.test"), transport=mock(answer)) as api:
        api.max_body = 1024 * 1024
        tracemalloc.start()
        try:
            with pytest.raises(PmtaApiError) as err:
                await api.status()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert err.value.reason == reason
    assert peak < 8 * 1024 * 1024, peak

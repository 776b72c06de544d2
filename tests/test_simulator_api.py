"""The simulator's management API over real loopback HTTP, read with the exporter's own client/parser."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from exporter.config import PmtaApiConfig
from exporter.pmta_api import PmtaApiClient, PmtaApiError
from simulator import SimConfig, Simulator
from simulator.config import ApiSpec
from simulator.scenario import parse_scenario
from simulator.server import ApiServer


def throttled_sim(minutes: float = 35, **api: object) -> Simulator:
    sim = Simulator("gmail-throttle", None, config=SimConfig(api=ApiSpec(**api)))  # type: ignore[arg-type]
    sim.run_until(sim.start + minutes * 60)
    return sim


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return throttled_sim()


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_pages_match_the_internal_queue_state(sim: Simulator, fmt: str) -> None:
    book = sim.book
    async with ApiServer(sim) as srv, PmtaApiClient(PmtaApiConfig(url=srv.url, format=fmt)) as api:
        status = await api.status()
        rcp, dom, nbytes = book.totals()
        assert status.smtp_rcp == rcp > 10_000
        assert status.queue["smtp"].dom == dom
        assert status.queue["smtp"].kb == round(nbytes / 1024, 1)
        assert status.conn_out == sum(q.connections(sim.t) for q in book.queues.values())
        assert status.spool_files == rcp and status.version == "5.0r8"
        assert set(status.queue) == {"smtp", "pipe", "discard", "file", "alias", "bounceProcessor",
                                     "feedbackLoopProcessor"}

        mine = sorted((q for q in book.queues.values() if q.vmta == "vmta-03" and q.rcp),
                      key=lambda q: (-q.rcp, q.name))
        listing = await api.queues("*/vmta-03")
        assert [(q.name, q.rcp, q.kb, q.conn) for q in listing.queues] == [
            (q.name, q.rcp, round(q.bytes / 1024, 1), q.connections(sim.t)) for q in mine[:10]]
        assert listing.total_rcp == sum(q.rcp for q in mine) and listing.total_queues == len(mine)
        gmail = listing.queues[0]
        assert (gmail.name, gmail.domain, gmail.vmta, gmail.backoff, gmail.paused) == (
            "gmail.com/vmta-03", "gmail.com", "vmta-03", True, False)
        assert gmail.retry_time.startswith("2024-06-12 ")

        top = await api.queues()
        everything = sorted((q for q in book.queues.values() if q.rcp), key=lambda q: (-q.rcp, q.name))
        assert [q.name for q in top.queues] == [q.name for q in everything[:10]]
        assert top.total_rcp == rcp

        vmtas = await api.vmtas()
        per_vmta: dict[str, int] = {}
        for q in book.queues.values():
            if q.rcp:
                per_vmta[q.vmta] = per_vmta.get(q.vmta, 0) + q.rcp
        assert {v.name: v.rcp for v in vmtas} == per_vmta
        assert vmtas[0].name == "vmta-03" and [v.rcp for v in vmtas] == sorted(per_vmta.values(), reverse=True)

        domains = await api.domains()
        assert domains[0].name == "gmail.com" and len(domains) == 10
        assert domains[0].rcp == sum(q.rcp for q in book.queues.values() if q.domain == "gmail.com")


async def test_raw_envelopes(sim: Simulator) -> None:
    async with ApiServer(sim) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        xml = (await http.get("/queues?format=xml&queue=gmail.com/vmta-03")).text
        assert xml.startswith("<rsp><data><title>Top 1 queues by number of recipients</title><queue>"
                              "<name>gmail.com/vmta-03</name><rcp>")
        assert xml.endswith("</data><succ/></rsp>") and "<paused>no</paused><mode>backoff</mode>" in xml
        assert "<event><type>error</type><time>2024-06-12 " in xml and "4.7.28" in xml
        # PMTA's own forms (pmta-http-api.md §5.2): the reply wrapped with where it was connected, and its notices
        texts = re.findall(r"<text>([^<]*)</text>", xml)
        assert texts and all(t.startswith("Error: &quot;421") or t.startswith('Error: "421')
                             or t.startswith("message rate limit reached") for t in texts), texts[:3]
        wrapped = next(t for t in texts if t.startswith(("Error", )))
        assert re.search(r"while connected from \S+ \(198\.51\.100\.\d+\) to \S+ \([\d.]+\)$", wrapped), wrapped
        assert any(t.startswith("message rate limit reached (based on queue's backoff-max-msg-rate") for t in texts)
        js = (await http.get("/status?format=json")).json()
        assert js["status"] == "success" and js["message"] == ""
        assert js["data"]["status"]["shuttingDown"] is False and js["data"]["status"]["queue"]["pipe"]["kb"] == 0
        assert "<shuttingDown>0</shuttingDown>" in (await http.get("/status?format=xml")).text
        html = await http.get("/status")
        assert html.headers["content-type"].startswith("text/html")
        empty = (await http.get("/queues?format=xml&queue=*/vmta-99")).text
        assert empty == ("<rsp><data><title>Top 0 queues by number of recipients</title><totalRcp>0</totalRcp>"
                         "<totalQueuesWithRcp>0</totalQueuesWithRcp></data><succ/></rsp>")


async def test_api_key_and_forbidden() -> None:
    key = "k" * 32
    sim = throttled_sim(2, api_key=key, allow_without_key=False, xml_content_type="text/html")
    async with ApiServer(sim) as srv:
        async with PmtaApiClient(PmtaApiConfig(url=srv.url)) as api:
            with pytest.raises(PmtaApiError, match="HTTP 403") as err:
                await api.status()
            assert err.value.reason == "http_status"
        async with PmtaApiClient(PmtaApiConfig(url=srv.url, api_key=key)) as api:
            assert (await api.status()).smtp_rcp == sim.book.totals()[0]  # text/html body parsed as XML


async def test_paused_queues_show_as_paused() -> None:
    scenario = parse_scenario("name: p\nevents: [{kind: pause, at: 0, match: {vmta: vmta-01, isp: yahoo}}]")
    sim = Simulator(scenario, None, config=SimConfig(api=ApiSpec(json_paused="bool", max_items=500)))
    sim.run_until(sim.start + 600)
    paused = {q.name for q in sim.book.queues.values() if q.rcp and q.paused}
    assert paused and all(n.endswith("/vmta-01") for n in paused)
    async with ApiServer(sim) as srv:
        for fmt in ("xml", "json"):
            async with PmtaApiClient(PmtaApiConfig(url=srv.url, format=fmt)) as api:
                listing = await api.queues()
                assert {q.name for q in listing.queues if q.paused} == paused
                assert all(q.conn == 0 for q in listing.queues if q.paused)


async def test_gmail_throttle_queue_climbs_past_40k_then_drains() -> None:
    """The whole scenario at high speed, watched through the API as an exporter would."""
    sim = Simulator("gmail-throttle", None)
    seen: list[tuple[int, int, bool]] = []
    async with ApiServer(sim) as srv, PmtaApiClient(PmtaApiConfig(url=srv.url)) as api:
        run = asyncio.create_task(sim.run(speed=1e6, sim_seconds=sim.scenario.duration))
        while not run.done():
            listing = await api.queues("gmail.com/vmta-03")
            q = listing.queues[0] if listing.queues else None
            seen.append((sim.t - sim.start, q.rcp if q else 0, bool(q and q.backoff)))
            await asyncio.sleep(0.02)
        await run
        final = await api.queues("gmail.com/vmta-03")
    peak = max(seen, key=lambda s: s[1])
    assert peak[1] > 40_000 and peak[2] and 60 * 60 < peak[0] < 110 * 60
    assert sim.truth.max_queue("vmta-03", "gmail") > 40_000
    assert all(n < 1_000 for v, n in sim.truth.queue_samples[-1][1].items())
    assert final.queues == [] or final.queues[0].rcp < 500
    others = max(sim.truth.max_queue(f"vmta-0{i}", "gmail") for i in (1, 2, 4, 5, 6, 7, 8))
    assert others < 200


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_a_queue_lists_its_last_ten_events_as_pmta_5_does(sim: Simulator, fmt: str) -> None:
    """/status says 5.0r8, and PMTA 5.0 keeps a queue's last ten events (`max-events-recorded`, default 10; the 4.x
    sample's five were its own default): the simulator kept five."""
    from exporter.pmta_api import find_items, parse_envelope
    from simulator.api import build_app

    busiest = max((q for q in sim.book.queues.values() if q.rcp), key=lambda q: (len(q.events), q.rcp))
    assert len(busiest.events) == 10
    transport = httpx.ASGITransport(app=build_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        answer = await http.get("/queues", params={"format": fmt, "queue": busiest.name})
    [entry] = find_items(parse_envelope(answer.content, fmt), "queue")
    assert entry["name"] == busiest.name
    assert [e["text"] for e in entry["event"]] == [text for _, text in busiest.events]

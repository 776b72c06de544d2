"""A listing's totals read wherever its queues are (pmta-http-api.md §5.2: their placement under `data` is
UNCERTAIN). `find_items` took queues one level down (`data.queues.queue`) but the totals only straight under `data`:
the wrapped shape lost totalRcp, and with it the unlisted recipients and the coverage."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import PmtaApiConfig
from exporter.pmta_api import PmtaApiClient, parse_queues
from exporter.queues import QueuePoller

QUEUE = "<queue><name>gmail.com/v1</name><rcp>10</rcp></queue>"
TOTALS = "<totalRcp>500</totalRcp><totalQueuesWithRcp>40</totalQueuesWithRcp>"
SHAPES = {
    "xml-flat": ("xml", f"<rsp><data><title>Top 1</title>{QUEUE}{TOTALS}</data><succ/></rsp>"),
    "xml-wrapped": ("xml", f"<rsp><data><queues><title>Top 1</title>{QUEUE}{TOTALS}</queues></data><succ/></rsp>"),
    "xml-wrapped-two": ("xml", f"<rsp><data><queues>{QUEUE}{QUEUE.replace('v1', 'v2').replace('10', '0')}{TOTALS}"
                               "</queues></data><succ/></rsp>"),
    "json-flat": ("json", json.dumps({"data": {"title": "Top 1", "queue": [{"name": "gmail.com/v1", "rcp": 10}],
                                               "totalRcp": 500, "totalQueuesWithRcp": 40},
                                      "status": "success", "message": ""})),
    "json-wrapped": ("json", json.dumps({"data": {"queues": {"title": "Top 1", "queue": [
        {"name": "gmail.com/v1", "rcp": 10}], "totalRcp": 500, "totalQueuesWithRcp": 40}},
        "status": "success", "message": ""})),
    "json-wrapped-one": ("json", json.dumps({"data": {"queues": {"queue": {"name": "gmail.com/v1", "rcp": 10},
                                                                 "totalRcp": 500, "totalQueuesWithRcp": 40}},
                                             "status": "success"})),
}
STATUS = b"<rsp><data><status><queue><smtp><rcp>500</rcp><dom>3</dom><kb>4.0</kb></smtp></queue></status></data>" \
         b"<succ/></rsp>"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_totals_are_read_where_the_queues_are(shape: str) -> None:
    fmt, body = SHAPES[shape]
    listing = parse_queues(body.encode(), fmt)
    assert [(q.name, q.rcp) for q in listing.queues if q.rcp] == [("gmail.com/v1", 10)]
    assert (listing.total_rcp, listing.total_queues) == (500, 40)


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_an_empty_wrapped_listing_keeps_its_totals(fmt: str) -> None:
    """No queue listed (a filter matching none), the totals inside the wrapper: still a whole, empty, listing."""
    body = "<rsp><data><queues><title>Top 0</title><totalRcp>0</totalRcp><totalQueuesWithRcp>0</totalQueuesWithRcp>" \
           "</queues></data><succ/></rsp>" if fmt == "xml" else json.dumps({"status": "success", "data": {"queues": {
               "title": "Top 0", "totalRcp": 0, "totalQueuesWithRcp": 0}}})
    listing = parse_queues(body.encode(), fmt)
    assert (listing.queues, listing.total_rcp, listing.total_queues) == ([], 0, 0)


async def _poll(fmt: str, listing: str) -> QueuePoller:
    """One poll; v1 is beyond /vmtas' top N (an empty /vmtas) and its own listing is the same shape."""
    vmtas = b"<rsp><data></data><succ/></rsp>" if fmt == "xml" else b'{"status": "success", "data": {}}'
    status = STATUS if fmt == "xml" else json.dumps({"status": "success", "data": {"status": {"queue": {
        "smtp": {"rcp": 500, "dom": 3, "kb": 4.0}}}}}).encode()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/status":
            return httpx.Response(200, content=status)
        return httpx.Response(200, content=vmtas if request.url.path == "/vmtas" else listing.encode())

    poller = QueuePoller(PmtaApiConfig(url="http://pmta", format=fmt), CollectorRegistry(), lambda d: "gmail")
    async with PmtaApiClient(poller.config, transport=httpx.MockTransport(answer)) as client:
        assert await poller.poll_once(client)
    return poller


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_both_shapes_give_the_same_unlisted_recipients_and_coverage(fmt: str) -> None:
    flat, wrapped = [await _poll(fmt, SHAPES[f"{fmt}-{shape}"][1]) for shape in ("flat", "wrapped")]
    assert flat.snapshot is not None and wrapped.snapshot is not None
    assert flat.snapshot.unlisted == {"v1": 490.0}
    assert (wrapped.snapshot.unlisted, wrapped.snapshot.coverage) == (flat.snapshot.unlisted, flat.snapshot.coverage)
    assert flat.snapshot.coverage == 1.0
    for poller in (flat, wrapped):
        poller.close(wait=True)

"""A hub over a host that hashes recipients and one that does not (hostile review of the hub, 2026-12-08).

Host `plain` stored alice@gmail.com for Message-Id <m1@shop.example>; host `hashed` (hash_recipients) stored the same
recipient of the same message. The hub's merged answers put `alice@gmail.com` beside
`hmac-sha256:<hex>`: the pair unmasks that host's hash of alice for every other answer it gives. Once any host has
answered hashed, the others' rows come without their recipient (null), their keys and replies redacted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import CorrelatorConfig
from exporter.http import build_app
from hub.app import build_hub_app
from hub.config import HubConfig
from tests.test_correlator_support import CORPUS, NOW, Harness, batch

PLAIN, HASHED = "http://plain:9469", "http://hashed:9469"
SAME = ("type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,vmta,jobId,header_Message-Id\n"
        "d,2024-05-01 10:30:00+0000,2024-05-01 10:00:00+0000,news@shop.example,alice@gmail.com,relayed,2.0.0,"
        "smtp;250 2.0.0 OK <alice@gmail.com>,mx.gmail.com,vmta9,J1,<m1@shop.example>\n"
        "d,2024-05-01 11:30:00+0000,2024-05-01 11:00:00+0000,news@shop.example,alice@gmail.com,relayed,2.0.0,"
        "smtp;250 2.0.0 OK <alice@gmail.com>,mx.gmail.com,vmta8,J9-alice@gmail.com,<alice@gmail.com.77@shop>\n")


class ByHost(httpx.AsyncBaseTransport):
    """Each target's requests to its own daemon app."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


@asynccontextmanager
async def hub_over(plain: Harness, hashed: Harness) -> AsyncIterator[httpx.AsyncClient]:
    apps = {"plain": build_app(CollectorRegistry(), dict, routers=[plain.sink.asgi_routes()]),
            "hashed": build_app(CollectorRegistry(), dict, routers=[hashed.sink.asgi_routes()])}
    app, hub = build_hub_app(HubConfig.model_validate({"hub": {"targets": [PLAIN, HASHED]}}))
    await hub.fanout.client.aclose()
    hub.fanout.client = httpx.AsyncClient(transport=ByHost(apps))
    hub.clock = lambda: NOW
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
        try:
            yield client
        finally:
            await hub.fanout.client.aclose()


@pytest.fixture
def hosts(tmp_path: Path) -> Any:
    (tmp_path / "plain").mkdir()
    (tmp_path / "hashed").mkdir()
    plain = Harness(tmp_path / "plain", clock=lambda: NOW)
    hashed = Harness(tmp_path / "hashed", CorrelatorConfig(hash_recipients=True,
                                                           hmac_key_file=tmp_path / "hmac.key"), clock=lambda: NOW)
    for b in CORPUS:
        plain.commit(b)
    hashed.commit(batch("/l/acct-alice.csv", SAME))
    plain.commit(batch("/l/acct-alice.csv", SAME))
    yield plain, hashed
    plain.close()
    hashed.close()


async def test_no_merged_answer_shows_an_address_beside_its_hash(hosts: tuple[Harness, Harness],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="watchtower.hub")
    asks = [("/api/v1/messages/m1@shop.example", {}), ("/api/v1/timeline", {"rcpt": "alice@gmail.com",
                                                                            "message_id": "m1@shop.example"}),
            ("/api/v1/search", {"rcpt": "alice@gmail.com"}), ("/api/v1/lookup", {"message_id": "m1@shop.example"}),
            ("/ui/timeline", {"rcpt": "x@y.example", "message_id": "m1@shop.example"}),
            ("/ui/messages/m1@shop.example", {})]
    async with hub_over(*hosts) as hub:
        answers = {}
        for path, params in asks:
            for fmt in (("json", "text") if path.startswith("/api/v1/") and "lookup" not in path else ("",)):
                r = await hub.get(path, params={**params, **({"format": fmt} if fmt else {})})
                answers[(path, fmt)] = r
                assert r.status_code in (200, 404), (path, fmt, r.status_code, r.text[:300])
        search = answers[("/api/v1/search", "json")].json()["items"]
        plain_row = next(i for i in search if i["host"] == "plain:9469" and i["vmta"] == "vmta8")
        tid = plain_row["id"]
        by_id = await hub.get(f"/api/v1/timelines/{tid}", params={"host": "plain:9469"})  # one host; hashing seen
    for (path, fmt), r in {**answers, ("by id", ""): by_id}.items():
        text = r.text.lower()
        if "hmac-sha256:" in text or path == "by id":
            assert "alice@" not in text and "alice%40" not in text, (path, fmt, r.text[:2000])
    hosts_seen = {i["host"] for i in search}
    assert hosts_seen == {"plain:9469", "hashed:9469"}  # the plain host's row is served, without its recipient
    assert plain_row["rcpt"] is None and plain_row["rcpt_domain"] == "gmail.com"
    assert plain_row["job_id"] == "J9-[redacted]" and plain_row["message_id"] == "[redacted].77@shop"
    timeline = answers[("/api/v1/timeline", "json")].json()
    delivered = [e for t in timeline["timelines"] for e in t["events"] if e["kind"] == "delivered"]
    assert [e["dsn_diag"] for e in delivered if e["vmta"] == "vmta9"] == ["smtp;250 2.0.0 OK <<rcpt>>"] * 2
    said = [r.getMessage() for r in caplog.records if "hash recipients" in r.getMessage()]
    assert said == ["hosts hashed:9469 hash recipients and plain:9469 do not: the latter's timelines are served "
                    "without their recipients (rcpt null, addresses redacted), so that no answer pairs an address "
                    "with its hash; set correlator.hash_recipients alike on every host"]

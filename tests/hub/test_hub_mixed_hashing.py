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
from hub.privacy import PlainWithheld
from tests.test_correlator_support import CORPUS, NOW, Harness, batch

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
async def hub_over(plain: Harness, hashed: Harness, names: tuple[str, str] = ("plain", "hashed"),
                   ) -> AsyncIterator[httpx.AsyncClient]:
    """A hub over `plain` and `hashed` as targets http://<name>:9469 (names in that order)."""
    apps = {names[0]: build_app(CollectorRegistry(), dict, routers=[plain.sink.asgi_routes()]),
            names[1]: build_app(CollectorRegistry(), dict, routers=[hashed.sink.asgi_routes()])}
    targets = [f"http://{name}:9469" for name in names]
    app, hub = build_hub_app(HubConfig.model_validate({"hub": {"targets": targets}}))
    await hub.fanout.client.aclose()
    hub.fanout.client = httpx.AsyncClient(transport=ByHost(apps))
    hub.clock = lambda: NOW
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
        try:
            yield client
        finally:
            await hub.fanout.client.aclose()


def two_hosts(tmp_path: Path) -> tuple[Harness, Harness]:
    (tmp_path / "plain").mkdir()
    (tmp_path / "hashed").mkdir()
    plain = Harness(tmp_path / "plain", clock=lambda: NOW)
    hashed = Harness(tmp_path / "hashed", CorrelatorConfig(hash_recipients=True,
                                                           hmac_key_file=tmp_path / "hmac.key"), clock=lambda: NOW)
    for b in CORPUS:
        plain.commit(b)
    return plain, hashed


@pytest.fixture
def hosts(tmp_path: Path) -> Any:
    plain, hashed = two_hosts(tmp_path)
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


async def test_a_lookup_echoes_the_key_as_the_hashing_host_does_whatever_the_target_order(
        hosts: tuple[Harness, Harness]) -> None:
    """Review of the fix above: `/lookup?message_id=alice@gmail.com.77@shop` echoed the Message-Id as the first target
    (a plain host) did, with alice's address, beside the hashing host's `hmac-sha256:` rows."""
    async with hub_over(*hosts, names=("aplain", "zhashed")) as hub:
        body = (await hub.get("/api/v1/lookup", params={"message_id": "alice@gmail.com.77@shop"})).json()
    assert {t["host"] for t in body["timelines"]} == {"aplain:9469", "zhashed:9469"}
    assert any(str(t["rcpt"]).startswith("hmac-sha256:") for t in body["timelines"])
    assert body["message_id"] == "<rcpt>.77@shop" and "alice@" not in str(body).lower(), body


async def test_a_hashing_hosts_rows_without_a_recipient_are_served_as_it_serves_them(tmp_path: Path) -> None:
    """Review of the fix above: a hashing host's row without a recipient (rcpt null, rcpt_hashed false: a complaint
    with a Message-Id only) was taken for a plain host's and its Message-Id redacted, which the daemon keeps as logged
    (the pages link by it): in a fleet where every host hashes, the hub must serve what the daemon serves."""
    plain, hashed = two_hosts(tmp_path)
    hashed.commit(batch("/l/acct-alice.csv", SAME))
    hashed.commit(batch("/l/fbl-1.csv", "type,timeLogged,orig,rcpt,feedbackType,jobId,header_Message-Id\n"
                                         "f,2024-05-02 09:00:00+0000,news@shop.example,,abuse,J7,"
                                         "<bob@yahoo.com.5@shop.example>\n"))
    async with hub_over(plain, hashed) as hub:
        await hub.get("/api/v1/search", params={"rcpt": "alice@gmail.com"})  # the hub learns that `hashed` hashes
        rows = (await hub.get("/api/v1/search", params={"job_id": "J7"})).json()["items"]
    async with hashed.client() as daemon:
        own = (await daemon.get("/api/v1/search", params={"job_id": "J7"})).json()["items"]
    plain.close()
    hashed.close()
    assert own and [{k: v for k, v in r.items() if k != "host"} for r in rows] == own
    assert own[0]["message_id"] == "bob@yahoo.com.5@shop.example" and own[0]["rcpt"] is None


async def test_a_hashed_echo_alone_tells_the_hub_a_host_hashes(tmp_path: Path) -> None:
    """Review of the fix above: only the plain host holds alice's timeline; the hashing host answers the lookup with
    no timeline but echoes `rcpt` hashed, and the hub showed that echo beside alice's plain row (it learnt hashing
    from rows only)."""
    plain, hashed = two_hosts(tmp_path)
    hashed.commit(batch("/l/acct-zed.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId\n"
                                           "d,1714550400,,s@shop.example,zed@gmail.com,2.0.0,vA,JZ\n"))
    async with hub_over(plain, hashed) as hub:
        body = (await hub.get("/api/v1/lookup", params={"job_id": "J1", "rcpt": "alice@gmail.com"})).json()
        later = (await hub.get("/api/v1/search", params={"rcpt": "alice@gmail.com"})).json()["items"]
    plain.close()
    hashed.close()
    assert body["rcpt"].startswith("hmac-sha256:") and body["timelines"], body
    assert "alice@" not in str(body).lower() and "alice@" not in str(later).lower(), (body, later)
    assert [r["rcpt"] for r in body["timelines"]] == [None] and [r["rcpt"] for r in later] == [None]


async def test_a_hash_asked_for_does_not_make_a_plain_host_look_hashing(hosts: tuple[Harness, Harness]) -> None:
    """Review: a plain host echoes the `rcpt` it is asked; asked with an `hmac-sha256:` copied from an answer, its
    echo was taken for hashing, and from then on its rows passed unwithheld beside the hashing host's hashes."""
    async with hub_over(*hosts) as hub:
        first = (await hub.get("/api/v1/search", params={"rcpt": "alice@gmail.com"})).json()["items"]
        digest = next(i["rcpt"] for i in first if i["rcpt"])
        await hub.get("/api/v1/lookup", params={"job_id": "J1", "rcpt": digest})
        await hub.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": digest})
        later = await hub.get("/api/v1/timeline", params={"rcpt": "alice@gmail.com", "message_id": "m1@shop.example"})
    assert "hmac-sha256:" in later.text and "alice@" not in later.text.lower(), later.text[:1000]


async def test_a_plain_hosts_row_without_a_recipient_loses_local_parts_as_a_hashing_hosts(
        hosts: tuple[Harness, Harness]) -> None:
    """Review: a plain host's complaint without a recipient kept `J9-alice@gmail.com` as logged, beside the hashing
    host's `J9-<rcpt>` and alice's hash; a hashing host stores such a row's jobId and sender without local parts."""
    plain, _hashed = hosts
    plain.commit(batch("/l/fbl-1.csv", "type,timeLogged,orig,rcpt,feedbackType,jobId,header_Message-Id\n"
                                       "f,2024-05-01 12:00:00+0000,news@shop.example,,abuse,J9-alice@gmail.com,"
                                       "<n1@shop.example>\n"))
    async with hub_over(*hosts) as hub:
        rows = (await hub.get("/api/v1/search", params={"job_id": "J9-alice@gmail.com"})).json()["items"]
    assert any(r["host"] == "hashed:9469" and r["rcpt"].startswith("hmac-sha256:") for r in rows), rows
    plain_row = next(r for r in rows if r["host"] == "plain:9469" and r["message_id"] == "n1@shop.example")
    assert (plain_row["rcpt"], plain_row["job_id"], plain_row["orig"], plain_row["message_id"]) == (
        None, "[redacted]@gmail.com", "[redacted]@shop.example", "n1@shop.example")


async def test_a_lookup_by_a_hash_echoes_keys_as_the_hashing_host_whatever_the_target_order(
        hosts: tuple[Harness, Harness]) -> None:
    """Review: asked by a hash matching nothing, both hosts echo that hash and hold no timeline; the tie went to the
    first target, a plain host echoing `alice@gmail.com.77@shop` beside the hash."""
    async with hub_over(*hosts, names=("aplain", "zhashed")) as hub:
        body = (await hub.get("/api/v1/lookup", params={"message_id": "alice@gmail.com.77@shop",
                                                        "rcpt": "hmac-sha256:" + "0" * 64})).json()
    assert body["timelines"] == [] and body["rcpt"].startswith("hmac-sha256:")
    assert "alice@" not in str(body).lower(), body


def test_a_plain_row_under_a_name_once_hashing_is_withheld() -> None:
    """Review: hosts are known by name for the hub's life; a target rebuilt with hashing off (or a name now pointing
    at another daemon) had its plain rows passed unwithheld beside the other host's hashes."""
    withhold = PlainWithheld()
    withhold.hashing = {"h:9469", "k:9469"}  # both answered hashed once
    rows = withhold([
        {"host": "h:9469", "rcpt": "alice@gmail.com", "rcpt_hashed": False, "job_id": "J9-alice@gmail.com",
         "message_id": "m1@shop.example", "orig": "news@shop.example"},
        {"host": "k:9469", "rcpt": "hmac-sha256:" + "1" * 64, "rcpt_hashed": True, "job_id": "J9-<rcpt>",
         "message_id": "m1@shop.example", "orig": "news@shop.example"},
        {"host": "h:9469", "rcpt": None, "rcpt_hashed": False, "job_id": "[redacted]@gmail.com",
         "message_id": "n1@shop.example", "orig": "[redacted]@shop.example"},
        {"host": "h:9469", "rcpt": None, "rcpt_hashed": False, "job_id": "J9-alice@gmail.com",  # now plain
         "message_id": "n2@shop.example", "orig": "bounce-alice=gmail.com@shop.example"}])
    assert [(r["rcpt"], r["job_id"], r["orig"]) for r in rows] == [
        (None, "J9-[redacted]", "news@shop.example"), ("hmac-sha256:" + "1" * 64, "J9-<rcpt>", "news@shop.example"),
        (None, "[redacted]@gmail.com", "[redacted]@shop.example"),
        (None, "[redacted]@gmail.com", "[redacted]@shop.example")]

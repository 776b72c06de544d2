"""Basic auth over real loopback connections: no 500 for any password, a bounded bcrypt queue, equal work per failure.

Requests go through the real uvicorn server (daemon and hub apps) on raw sockets, so the source address can be
chosen: Linux routes all of 127.0.0.0/8 to lo, so "attackers" bind 127.0.0.2/127.0.0.3 and the scraper 127.0.0.1.
bcrypt work is measured by counting bcrypt.checkpw calls, never by timing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from exporter import webauth
from exporter.config import load_config
from exporter.http import build_app
from tests.conftest import free_port, write_config
from tests.listener import serving

PASSWORD = "s3cret"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
LONG = "L" * 72 + "-and-more-after-byte-72"
LONG_HASH = bcrypt.hashpw(LONG.encode()[:72], bcrypt.gensalt(rounds=4)).decode()  # as bcrypt < 5 / htpasswd made it
USERS = {"prometheus": HASH, "longpw": LONG_HASH, "legacy": "plain-pw"}
UNAUTHORIZED = {"error": "authentication required", "parameter": None, "status": 401}


async def request(port: int, user: str | None, password: str = "", source: str = "127.0.0.1",
                  path: str = "/healthz") -> tuple[int, dict[str, str], dict]:
    """One GET over a new connection from `source`; (status, lower-cased headers, JSON body)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout=10)
    auth = ""
    if user is not None:
        auth = "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() + "\r\n"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n".encode())
    try:
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines[1:]))
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.fixture(params=["daemon", "hub"])
async def port(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[int]:
    """The daemon's listener or the hub's, both with USERS as web.basic_auth_users."""
    if request.param == "daemon":
        config = load_config(write_config(tmp_path, web={"basic_auth_users": USERS}))
        async with serving(build_app(CollectorRegistry(), lambda: {"ok": True}, [], USERS), config) as (p, _):
            yield p
        return
    from hub.app import build_hub_app
    from hub.config import HubConfig

    hub_config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}", "hub": {"targets": ["http://127.0.0.1:1"]},
                                           "web": {"basic_auth_users": USERS}})
    app, hub = build_hub_app(hub_config)
    try:
        async with serving(app, hub_config) as (p, _):
            yield p
    finally:
        await hub.fanout.client.aclose()


@pytest.fixture
async def daemon_port(tmp_path: Path) -> AsyncIterator[int]:
    config = load_config(write_config(tmp_path, web={"basic_auth_users": USERS}))
    async with serving(build_app(CollectorRegistry(), lambda: {"ok": True}, [], USERS), config) as (p, _):
        yield p


class CountedBcrypt:
    """Replaces bcrypt.checkpw: records each call's hash; calls with a wrong password wait for `gate`
    (so a test can hold verifications in flight), the right ones run at once."""

    def __init__(self, gate_wrong: bool) -> None:
        self.real: Callable[[bytes, bytes], bool] = bcrypt.checkpw
        self.calls: list[bytes] = []
        self.gate = threading.Event()
        if not gate_wrong:
            self.gate.set()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls.append(hashed)
        if password != PASSWORD.encode():
            self.gate.wait(timeout=30)
        return self.real(password, hashed)

    async def until(self, n: int) -> None:
        """Wait (in loop turns, bounded) until n checks have started."""
        for _ in range(2000):
            if len(self.calls) >= n:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{len(self.calls)} bcrypt checks started, expected {n}")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountedBcrypt:
    counter = CountedBcrypt(gate_wrong=False)
    monkeypatch.setattr(webauth.bcrypt, "checkpw", counter)
    return counter


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> CountedBcrypt:
    counter = CountedBcrypt(gate_wrong=True)
    monkeypatch.setattr(webauth.bcrypt, "checkpw", counter)
    yield counter
    counter.gate.set()  # never leave a worker thread blocked


# --- 1. passwords over bcrypt's 72 bytes ---------------------------------------------------------

async def test_password_over_72_bytes_is_401_without_traceback(port, caplog):
    caplog.set_level(logging.DEBUG)
    for user, password in [("nobody", "x" * 73), ("prometheus", "\u00e9" * 37), ("prometheus", PASSWORD + "x" * 80),
                           ("legacy", "y" * 500), ("longpw", LONG[:71] + "X" + LONG[72:])]:
        status, headers, body = await request(port, user, password)
        assert (status, body) == (401, UNAUTHORIZED), (user, password)
        assert headers["www-authenticate"] == 'Basic realm="watchtower"'
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_hash_made_from_the_first_72_bytes_accepts_the_long_password(port):
    """Hashes made by bcrypt < 5, htpasswd or Go cover the first 72 bytes: such a user keeps logging in."""
    assert (await request(port, "longpw", LONG))[0] == 200
    assert (await request(port, "longpw", LONG[:72]))[0] == 200
    assert (await request(port, "longpw", LONG[:71]))[0] == 401


ODD_PASSWORDS = ["x" * 73, "\u00e9" * 37, "a\0b", "\ud800", "", "\U0001f600" * 40]
ODD_USERS = ["prometheus", "legacy", "nobody", "bad-cost", "bad-prefix", "bad-salt", "\udcff"]


def test_verify_never_raises(caplog):
    """Any str pair, and hashes that match the bcrypt pattern but that bcrypt refuses, give False, never an error."""
    odd = {"bad-cost": "$2b$99$" + HASH[7:], "bad-prefix": "$2$04$" + HASH[7:], "bad-salt": "$2b$04$" + "/" * 53}
    with caplog.at_level(logging.WARNING, logger="watchtower.http"):
        auth = webauth.BasicAuth({**USERS, **odd})
    assert sorted(r.getMessage().split(":")[0] for r in caplog.records) == [
        "web.basic_auth_users.bad-cost", "web.basic_auth_users.bad-prefix", "web.basic_auth_users.bad-salt"]
    assert {(u, p): auth.verify(u, p) for u in ODD_USERS for p in ODD_PASSWORDS} == {
        (u, p): False for u in ODD_USERS for p in ODD_PASSWORDS}


# --- 2. a bounded queue in front of bcrypt --------------------------------------------------------

async def test_one_check_in_flight_per_address_so_a_flood_cannot_delay_the_scraper(daemon_port, gated):
    first = asyncio.create_task(request(daemon_port, "prometheus", "wrong", source="127.0.0.2"))
    await gated.until(1)  # one wrong-password check from 127.0.0.2 running (held by the gate)
    flood = await asyncio.gather(*(request(daemon_port, f"user{i}", "wrong", source="127.0.0.2") for i in range(40)))
    assert {(status, body["status"]) for status, _, body in flood} == {(429, 429)}
    assert {headers["retry-after"] for _, headers, _ in flood} == {"1"}
    assert len(gated.calls) == 1  # refused without hashing
    # the scraper, from another address, gets the second thread while the attacker's check is still held
    assert (await request(daemon_port, "prometheus", PASSWORD, source="127.0.0.1"))[0] == 200
    assert len(gated.calls) == 2
    gated.gate.set()
    status, _, body = await first
    assert (status, body) == (401, UNAUTHORIZED)
    # cached: no more bcrypt, even while the same address floods again
    assert (await request(daemon_port, "prometheus", PASSWORD, source="127.0.0.2"))[0] == 200
    assert len(gated.calls) == 2


async def test_the_same_credentials_at_once_from_one_address_share_one_check(daemon_port, monkeypatch):
    """Several scrape jobs, replicas behind one NAT or a proxy send the same login at once right after a restart:
    they wait for the one check already running and share its answer (never 429: Prometheus does not retry)."""
    real = bcrypt.checkpw
    calls: list[bytes] = []
    gate = threading.Event()

    def held(password: bytes, hashed: bytes) -> bool:  # every check, right or wrong, held until the gate opens
        calls.append(hashed)
        gate.wait(timeout=30)
        return real(password, hashed)

    monkeypatch.setattr(webauth.bcrypt, "checkpw", held)
    try:
        logins = [asyncio.create_task(request(daemon_port, "prometheus", PASSWORD, source="127.0.0.2")) for _ in range(5)]
        for _ in range(2000):
            if calls:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the other four have arrived (and would have been refused before)
        wrong = await request(daemon_port, "prometheus", "wrong", source="127.0.0.2")  # other credentials: still 429
        gate.set()
        assert [status for status, _, _ in await asyncio.gather(*logins)] == [200] * 5
    finally:
        gate.set()
    assert wrong[0] == 429
    assert len(calls) == 1


async def test_waiting_for_a_bcrypt_thread_is_bounded_then_503(daemon_port, gated, monkeypatch):
    monkeypatch.setattr(webauth, "VERIFY_QUEUE_TIMEOUT", 0.05, raising=False)
    held = [asyncio.create_task(request(daemon_port, f"nobody{i}", "wrong", source=f"127.0.0.{i}")) for i in (2, 3)]
    await gated.until(webauth.VERIFY_CONCURRENCY)  # every thread busy with a held check
    status, headers, body = await request(daemon_port, "prometheus", PASSWORD, source="127.0.0.1")
    assert (status, body) == (503, {"error": "too many logins being checked; retry later", "parameter": None,
                                    "status": 503})
    assert headers["retry-after"] == "2" and len(gated.calls) == 2  # no hashing for the refused one
    gated.gate.set()
    assert [(s, b) for s, _, b in await asyncio.gather(*held)] == [(401, UNAUTHORIZED)] * 2
    assert (await request(daemon_port, "prometheus", PASSWORD, source="127.0.0.1"))[0] == 200
    assert len(gated.calls) == 3


def test_client_key_groups_ipv6_by_64():
    assert webauth.client_key("2001:db8:1:2:aaaa::1") == webauth.client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert webauth.client_key("::ffff:10.0.0.1") == "10.0.0.1" and webauth.client_key("127.0.0.2") == "127.0.0.2"
    assert webauth.client_key("") == ""


# --- 3. the same bcrypt work for every kind of failure --------------------------------------------

async def test_every_failure_costs_one_bcrypt_check_of_the_same_cost(daemon_port, counted):
    work = {}
    for kind, user in [("bcrypt user", "prometheus"), ("plain-text user", "legacy"), ("unknown user", "nobody")]:
        before = len(counted.calls)
        status, _, body = await request(daemon_port, user, "wrong")
        assert (status, body) == (401, UNAUTHORIZED)
        work[kind] = [h[:7] for h in counted.calls[before:]]
    assert work == {"bcrypt user": [b"$2b$04$"], "plain-text user": [b"$2b$04$"], "unknown user": [b"$2b$04$"]}
    assert (await request(daemon_port, "legacy", "plain-pw"))[0] == 200


async def test_a_websocket_upgrade_is_an_ordinary_request_behind_basic_auth(port: int):
    """`Upgrade: websocket` reached the app as a WebSocket request, past the basic-auth middleware (HTTP only) and
    the head-size limit: a 403 with an empty body, where any future WebSocket route would be open (review
    2026-12-04). The listener speaks no WebSocket: the request is HTTP, answered 401 like any other."""
    def exchange() -> bytes:
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /api/v1/search HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            return s.recv(65536)

    answer = await asyncio.to_thread(exchange)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"www-authenticate: basic" in answer.lower()


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/api/v1/nope/<script>", "/"])
async def test_every_answer_says_nosniff_no_store_and_a_closed_csp(port: int, path: str):
    """API answers (stored texts such as a jobId `<script>...`, recipients), errors and /metrics had no
    X-Content-Type-Options, Cache-Control or CSP: only the /ui pages did (review 2026-12-04). Refusals too."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        refused = await c.get(path)
        answered = await c.get(path, auth=("prometheus", PASSWORD))
    for r in (refused, answered):
        assert r.headers.get("x-content-type-options") == "nosniff", (r.status_code, dict(r.headers))
        assert r.headers.get("cache-control") == "no-store"
        assert "default-src 'none'" in r.headers.get("content-security-policy", "")


def test_bcrypt_costs_that_differ_are_warned_of_as_they_tell_user_names_apart():
    """An unknown user costs a check at the highest cost; a user of a lower cost failed faster (0.001 s against
    0.25 s), so its name showed (review 2026-12-04). check-config, the daemon and the hub warn of it."""
    from exporter.preflight import basic_auth_warnings

    users = {"prom": bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)).decode(),
             "admin": bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=5)).decode(), "legacy": "plain"}
    assert basic_auth_warnings(users) == [
        "web.basic_auth_users.legacy: plain-text password; store a bcrypt hash instead",
        "web.basic_auth_users: bcrypt costs differ (prom (4) below 5): a wrong password for those users fails "
        "faster than for an unknown name, so their names can be told by timing; hash every password at one cost"]
    assert basic_auth_warnings({k: v for k, v in users.items() if k != "admin"}) == [
        "web.basic_auth_users.legacy: plain-text password; store a bcrypt hash instead"]


# Named, not the mangled hashes: HASH's salt is random, and every xdist worker must collect the same test ids.
@pytest.mark.parametrize("how", ["cut short", "run on", "$2x$", "prefix only"])
def test_a_malformed_bcrypt_hash_logs_nobody_in_not_even_with_its_own_text(how: str, caplog) -> None:
    """Review 2026-12: `$2b$..` cut by one character was a plain-text password: its own text logged in (and the real
    password did not). The config refuses it; a BasicAuth given one anyway (an embedding caller) lets nobody in."""
    mangled = {"cut short": HASH[:-1], "run on": HASH + "Q", "$2x$": "$2x$" + HASH[4:], "prefix only": HASH[:7]}[how]
    with caplog.at_level(logging.WARNING, logger="watchtower.http"):
        auth = webauth.BasicAuth({"prom": mangled, "prometheus": HASH})
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["web.basic_auth_users.prom"]
    assert mangled not in caplog.text
    assert (auth.verify("prom", mangled), auth.verify("prom", PASSWORD), auth.verify("prometheus", PASSWORD)) == (
        False, False, True)

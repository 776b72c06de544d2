"""A loopback listener answers only to loopback names: a web page cannot DNS-rebind its own name onto it.

A page in the operator's browser (whose host runs the daemon, or has an `ssh -L` tunnel to it) can make its own name
resolve to 127.0.0.1 and then read the listener as same-origin: every timeline of /api/v1, the /ui pages, /metrics.
Such requests carry the page's name in `Host`; requests of the operator's own tools carry `localhost`, a loopback
address, the listen host or a name configured in `web.allowed_hosts`. Everything else is refused 421, before auth and
before any route. Real HTTP requests to the real listener (`make_server`, as `run` and `hub` serve it).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from exporter import cli
from exporter.config import WebConfig, load_config
from exporter.http import MISDIRECTED, build_app, error_body, host_allowed
from hub.app import build_hub_app
from hub.config import HubConfig
from tests.conftest import free_port, write_config
from tests.listener import serving
from tests.test_correlator_support import Harness, corpus_harness
from tests.test_http_wire import big_registry, raw_exchange

ROUTES = ("/metrics", "/api/v1/search?limit=1&since=3650d", "/ui/", "/healthz", "/openapi.json", "/")
EVIL = ("attacker.example", "ATTACKER.example:41469", "127.0.0.1.attacker.example", "127.attacker.example",
        "localhost.attacker.example:80", "attacker.example.", "[2001:db8::1]:9469", "0x7f000001", "2130706433")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from corpus_harness(tmp_path)


def daemon_app(h: Harness, **kw: Any) -> Any:
    return build_app(big_registry(10), lambda: {"ok": True, "files_followed": 0}, [h.sink.asgi_routes()], **kw)


async def get(port: int, path: str, host: str | None, **kw: Any) -> httpx.Response:
    headers = {} if host is None else {"Host": host}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as c:
        return await c.get(path, headers=headers, **kw)


def assert_misdirected(r: httpx.Response, what: str) -> None:
    assert r.status_code == 421, (what, r.status_code, r.text[:200])
    assert r.json() == error_body(421, MISDIRECTED) and "web.allowed_hosts" in MISDIRECTED
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"


async def test_a_loopback_listener_refuses_every_route_for_a_foreign_host(tmp_path: Path, h: Harness) -> None:
    """The reviewer's reproduction: `Host: attacker.example:PORT` read /api/v1/search (recipients in clear) with 200."""
    async with serving(daemon_app(h), load_config(write_config(tmp_path))) as (port, _):
        for path in ROUTES:
            for host in EVIL:
                r = await get(port, path, host)
                assert_misdirected(r, f"{host} {path}")
                assert "@" not in r.text
        # HEAD and a POSTed form (the /ui search form) are refused as well, before the form is read
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as c:
            r = await c.head("/api/v1/search", headers={"Host": "attacker.example"})
            assert r.status_code == 421
            r = await c.post("/api/v1/search", data={"rcpt": "alice@gmail.com", "since": "3650d"},
                             headers={"Host": "attacker.example"})
            assert_misdirected(r, "form")
            # the same connection goes on answering the loopback names (keep-alive)
            r = await c.get("/healthz")
            assert r.status_code == 200


async def test_loopback_names_any_port_and_no_host_are_answered(tmp_path: Path, h: Harness) -> None:
    """`ssh -L 19469:127.0.0.1:9469` then a Prometheus or curl on `localhost:19469`: Host names another port."""
    async with serving(daemon_app(h), load_config(write_config(tmp_path))) as (port, _):
        for host in ("localhost", f"localhost:{port}", "localhost:19469", "LocalHost:1", "localhost.",
                     "127.0.0.1", f"127.0.0.1:{port}", "127.1.2.3:8080", "[::1]", f"[::1]:{port}",
                     "[0:0:0:0:0:0:0:1]:80", None):
            for path in ("/api/v1/search?limit=1&since=3650d", "/healthz", "/metrics", "/ui/"):
                r = await get(port, path, host)
                assert r.status_code == 200, (host, path, r.status_code, r.text[:200])
        # HTTP/1.0 without Host (RFC 1945 had none)
        status, _, body = await asyncio.to_thread(raw_exchange, port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert status.split()[1] == "200", (status, body)
        status, _, body = await asyncio.to_thread(raw_exchange, port,
                                                  b"GET /healthz HTTP/1.0\r\nHost: attacker.example\r\n\r\n")
        assert status.split()[1] == "421", (status, body)
        # a second Host field naming another host is refused whatever the first says
        status, _, _ = await asyncio.to_thread(
            raw_exchange, port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\n"
                                b"Connection: close\r\n\r\n")
        assert status.split()[1] in ("400", "421"), status


async def test_refused_before_auth(tmp_path: Path, h: Harness) -> None:
    """The refusal costs no bcrypt check, and says nothing of the credentials."""
    users = {"prometheus": "$2b$04$19eStnSiR2gWbKHZ0qsWmORbKx3IluqeLIHyZwc8k18G7Is0ME5mK"}  # password "pw"
    config = load_config(write_config(tmp_path, web={"basic_auth_users": users}))
    async with serving(daemon_app(h, basic_auth_users=users), config) as (port, _):
        assert_misdirected(await get(port, "/api/v1/search", "attacker.example"), "auth")
        assert (await get(port, "/api/v1/search", "localhost")).status_code == 401
        assert (await get(port, "/healthz", "localhost", auth=("prometheus", "pw"))).status_code == 200


async def test_allowed_hosts_are_answered_case_insensitively(tmp_path: Path, h: Harness) -> None:
    """A reverse proxy that forwards its own name (`proxy_set_header Host $host`) names it in web.allowed_hosts."""
    config = load_config(write_config(tmp_path, web={"allowed_hosts": ["Watchtower.Example.NET", "[2001:DB8::1]",
                                                                       "192.0.2.7"]}))
    async with serving(daemon_app(h), config) as (port, _):
        for host in ("watchtower.example.net", "WATCHTOWER.example.net:443", "[2001:db8::1]:9471",
                     "[2001:db8:0::1]", "192.0.2.7", "localhost:1", "127.0.0.1"):
            r = await get(port, "/api/v1/search?limit=1&since=3650d", host)
            assert r.status_code == 200, (host, r.text[:200])
        for host in ("example.net", "other.example.net", "watchtower.example.net.attacker.example", "192.0.2.8"):
            assert_misdirected(await get(port, "/healthz", host), host)


async def test_a_listen_host_named_in_the_config_is_answered(tmp_path: Path, h: Harness) -> None:
    port = free_port()
    config = load_config(write_config(tmp_path, listen=f"localhost:{port}"))
    if not any(i[4][0] == "127.0.0.1" for i in socket.getaddrinfo("localhost", port, socket.AF_INET)):
        pytest.skip("localhost is not 127.0.0.1 here")
    async with serving(daemon_app(h), config) as (port, _):
        assert (await get(port, "/healthz", f"localhost:{port}")).status_code == 200
        assert_misdirected(await get(port, "/healthz", "attacker.example"), "named listen host")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_ipv6_loopback_listener(tmp_path: Path, h: Harness) -> None:
    port = free_port()
    config = load_config(write_config(tmp_path, listen=f"[::1]:{port}"))
    async with serving(daemon_app(h), config) as (port, _):
        async with httpx.AsyncClient(base_url=f"http://[::1]:{port}", timeout=10, trust_env=False) as c:
            assert (await c.get("/api/v1/search?limit=1&since=3650d")).status_code == 200  # Host: [::1]:PORT
            for host in ("[::1]", "localhost:1", "127.0.0.1", "[0::1]:5"):
                assert (await c.get("/healthz", headers={"Host": host})).status_code == 200, host
            assert_misdirected(await c.get("/api/v1/search", headers={"Host": "attacker.example"}), "v6")


async def test_a_listener_on_every_address_is_unchanged_without_allowed_hosts(tmp_path: Path, h: Harness) -> None:
    """Off loopback, Prometheus scrapes by whatever name its targets use: nothing is refused unless the key is set."""
    config = load_config(write_config(tmp_path, listen=f"0.0.0.0:{free_port()}"))
    async with serving(daemon_app(h), config) as (port, _):
        for host in ("attacker.example", "pmta-01.example.net:9469", "localhost", None):
            r = await get(port, "/api/v1/search?limit=1&since=3650d", host)
            assert r.status_code == 200, (host, r.text[:200])


async def test_a_listener_on_every_address_with_allowed_hosts(tmp_path: Path, h: Harness) -> None:
    config = load_config(write_config(tmp_path, listen=f"0.0.0.0:{free_port()}",
                                      web={"allowed_hosts": ["pmta-01.example.net"]}))
    async with serving(daemon_app(h), config) as (port, _):
        for host in ("pmta-01.example.net:9469", "localhost", "127.0.0.1", "[::1]", "0.0.0.0", None):
            assert (await get(port, "/metrics", host)).status_code == 200, host
        assert_misdirected(await get(port, "/metrics", "attacker.example"), "0.0.0.0")
        # the healthcheck subcommand asks 127.0.0.1 for a 0.0.0.0 bind: answered
        assert await asyncio.to_thread(cli.main, ["healthcheck", "--config", str(tmp_path / "watchtower.yml"),
                                                  "--timeout", "5"]) == 0


async def test_the_healthcheck_subcommand_is_answered(tmp_path: Path, h: Harness,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Docker's HEALTHCHECK runs `watchtower healthcheck`: it asks the listen address, whose Host is the listen host."""
    path = write_config(tmp_path)
    async with serving(daemon_app(h), load_config(path)):
        assert await asyncio.to_thread(cli.main, ["healthcheck", "--config", str(path), "--timeout", "5"]) == 0
    assert "healthy:" in capsys.readouterr().out


async def test_the_hub_listener_refuses_a_foreign_host(tmp_path: Path) -> None:
    """`watchtower hub` serves every host's timelines on 127.0.0.1:9470 by default: the same rule."""
    config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}",
                                       "hub": {"targets": [f"http://127.0.0.1:{free_port()}"]}})
    app, hub = build_hub_app(config)
    try:
        async with serving(app, config) as (port, _):
            for path in ("/api/v1/search?limit=1", "/ui/", "/healthz", "/metrics", "/"):
                assert_misdirected(await get(port, path, "attacker.example:9470"), f"hub {path}")
            assert (await get(port, "/healthz", "localhost:19470")).status_code == 200
            assert (await get(port, "/healthz", None)).status_code == 200
    finally:
        await hub.aclose()
    config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}", "web": {"allowed_hosts": ["hub.lan"]},
                                       "hub": {"targets": [f"http://127.0.0.1:{free_port()}"]}})
    assert config.web.allowed_hosts == ["hub.lan"] and config.web.api_max_concurrency == 16


def test_in_process_apps_are_not_checked() -> None:
    """build_app alone (the ASGI transport of the unit tests) answers any Host: the check belongs to the listener."""

    async def go() -> int:
        app = build_app(big_registry(10), lambda: {"ok": True})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
            return (await c.get("/healthz", headers={"Host": "attacker.example"})).status_code

    assert asyncio.run(go()) == 200


def test_allowed_hosts_takes_host_names_only() -> None:
    assert WebConfig().allowed_hosts == []
    assert WebConfig(allowed_hosts=["Grafana.Example.", "[2001:DB8:0::1]", "2001:db8::2", "10.0.0.1"]).allowed_hosts \
        == ["grafana.example", "[2001:db8::1]", "[2001:db8::2]", "10.0.0.1"]
    for bad in ("grafana.example:3000", "http://grafana.example", "", " ", "*.example.net", "a b", "[::1]:9469",
                "user@host", "host/path", "[not-v6]"):
        with pytest.raises(ValidationError, match="allowed_hosts"):
            WebConfig(allowed_hosts=[bad])


@pytest.mark.parametrize("value", [b"[::1]evil.example", b"localhost:evil.example", b"localhost:80:80",
                                   b"127.0.0.1:9469x", b"[::1]:80]", b"[::1]]"])
def test_a_malformed_port_is_refused(value: bytes) -> None:
    """Regression review 2026-12-06: `[::1]evil.example` was cut at its `]`, `localhost:evil.example` at its `:`, and
    what followed was never read: a Host is a name, then nothing or `:` and the port's digits (RFC 9110 7.2: maybe
    none)."""
    names = frozenset({b"localhost", b"127.0.0.1", b"[::1]"})
    assert not host_allowed(value, names)
    assert all(host_allowed(ok, names) for ok in (b"localhost:9469", b"[::1]:9469", b"[::1]", b"localhost:"))

"""The listener: /metrics exposition, /healthz, basic auth when configured."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from exporter.http import build_app


def client(users: dict[str, str] | None = None, ok: bool = True) -> httpx.AsyncClient:
    reg = CollectorRegistry()
    Counter("watchtower_probe", "probe", registry=reg).inc(3)
    app = build_app(reg, lambda: {"ok": ok, "files_followed": 2}, basic_auth_users=users)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt")


async def test_metrics_and_health():
    async with client() as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and "watchtower_probe_total 3.0" in r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert (await c.get("/healthz")).json() == {"ok": True, "files_followed": 2}
        r = await c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert r.text.rstrip().endswith("# EOF")


async def test_unhealthy_is_503():
    async with client(ok=False) as c:
        assert (await c.get("/healthz")).status_code == 503


async def test_basic_auth_guards_every_route():
    async with client({"prom": "s3cret"}) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/healthz", auth=("prom", "wrong"))).status_code == 401
        assert (await c.get("/metrics", auth=("prom", "s3cret"))).status_code == 200

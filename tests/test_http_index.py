"""`GET /` lists what this listener serves: with the correlator off (no /api/v1 routes, every /api/v1 path a 404)
it listed `/api/v1/...    message timelines` all the same; the `/ui/` line was already conditional."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from exporter.http import build_app

API_LINE = "\n/api/v1/...    message timelines (docs/api.md)\n"


async def _index(routers: list[APIRouter]) -> tuple[str, int]:
    app = build_app(CollectorRegistry(), lambda: {"ok": True}, routers)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        return (await c.get("/")).text, (await c.get("/api/v1/search")).status_code


async def test_the_index_lists_the_api_only_where_it_is_served() -> None:
    bare, status = await _index([])
    assert status == 404
    assert API_LINE not in bare and "/api/v1" not in bare, bare
    assert bare.endswith("\n/metrics       Prometheus metrics\n/healthz       health\n/openapi.json  API description\n")

    api = APIRouter(prefix="/api/v1")

    @api.get("/search")
    async def search() -> dict[str, int]:
        return {}

    served, status = await _index([api])
    assert status == 200
    assert API_LINE in served, served

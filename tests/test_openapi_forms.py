"""/openapi.json describes what the listener serves: every /api/v1 lookup answers a POSTed HTML form of its GET's
query parameters (exporter.formquery: addresses out of URLs), so each has a `post` operation naming that form, and
a generated client can send a recipient without putting it in a URL."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.formquery import FORM_TYPE
from exporter.http import build_app
from tests.test_correlator_support import Harness


@pytest.fixture
def spec(tmp_path: Path) -> dict:
    h = Harness(tmp_path)
    try:
        return build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()]).openapi()
    finally:
        h.close()


def test_every_api_lookup_has_a_form_post_with_its_get_query_parameters(spec: dict) -> None:
    api = {path: ops for path, ops in spec["paths"].items() if path.startswith("/api/v1/")}
    assert api
    for path, ops in api.items():
        get, post = ops["get"], ops.get("post")
        assert post is not None, path
        query = {p["name"]: p for p in get.get("parameters", []) if p["in"] == "query"}
        form = post["requestBody"]["content"][FORM_TYPE]["schema"]
        assert set(form["properties"]) == set(query), path
        assert sorted(form.get("required", [])) == sorted(n for n, p in query.items() if p.get("required")), path
        assert [p for p in post.get("parameters", []) if p["in"] == "query"] == [], path
        assert [p["name"] for p in post.get("parameters", []) if p["in"] == "path"] == [
            p["name"] for p in get.get("parameters", []) if p["in"] == "path"], path
        assert post["operationId"] != get["operationId"]
        assert post["responses"]["200"] == get["responses"]["200"], path
        assert set(post["responses"]) >= {"408", "413", "415"}, path
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_the_documented_form_post_is_answered_as_its_get(tmp_path: Path) -> None:
    """What the spec promises, sent: POST /api/v1/timelines with rcpt as a form gives the GET's answer."""
    h = Harness(tmp_path)
    try:
        app = build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()])
        spec = app.openapi()
        post = spec["paths"]["/api/v1/timeline"]["post"]
        assert "rcpt" in post["requestBody"]["content"][FORM_TYPE]["schema"]["properties"]

        async def ask() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
                return (await c.post("/api/v1/timeline", data={"rcpt": "nobody@example.com"}),
                        await c.get("/api/v1/timeline", params={"rcpt": "nobody@example.com"}))

        import asyncio

        posted, got = asyncio.run(ask())
        assert (posted.status_code, posted.json()) == (got.status_code, got.json())
    finally:
        h.close()

"""The Sankey page over the real listener for degenerate flows: none, one link, only complaints, one huge node
beside many small ones. Widths stay one positive scale and everything stays inside the drawing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from exporter.config import load_config
from pages import build_pages_router
from tests.conftest import write_config
from tests.listener import serving


def node(kind: str, name: str) -> dict[str, Any]:
    return {"id": f"{kind}:{name}", "title": name, "subtitle": kind}


def edge(src: str, dst: str, delivered: int, bounced: int = 0, deferred: int = 0, complained: int = 0) -> dict[str, Any]:
    return {"id": f"{src}->{dst}", "source": src, "target": dst, "detail__delivered": delivered,
            "detail__bounced": bounced, "detail__deferred": deferred, "detail__complained": complained}


class Flows:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = {"since": "2026-11-30T09:00:00Z", "until": None, **body}

    async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        assert path == "/api/v1/flows"
        return 200, self.body


async def render(tmp_path: Path, body: dict[str, Any]) -> str:
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Flows(body)))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        r = await httpx.AsyncClient(timeout=10).get(f"http://127.0.0.1:{port}/ui/flows")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    return r.text


def geometry(page: str) -> tuple[float, float, list[float], list[tuple[float, float, float]]]:
    svg = re.search(r"<svg id=\"sankey\".*?</svg>", page, re.S)
    assert svg is not None
    head = re.match(r"<svg [^>]*>", svg.group()).group()
    px = float(re.search(r'data-px-per-attempt="([-+0-9.e]+)"', head).group(1))
    height = float(re.search(r' height="([0-9.]+)"', head).group(1))
    widths = [float(w) for w in re.findall(r'<path class="link"[^>]*stroke-width="([-0-9.]+)"', svg.group())]
    rects = [tuple(float(v) for v in m) for m in
             re.findall(r'<rect x="([-0-9.]+)" y="([-0-9.]+)" width="[0-9.]+" height="([-0-9.]+)"', svg.group())]
    return px, height, widths, rects


@pytest.mark.parametrize("body", [
    {"nodes": [], "edges": []},
    {"nodes": [node("sender", "a.example")], "edges": []},
    {"nodes": [node("sender", "a.example"), node("vmta", "v1")],
     "edges": [edge("sender:a.example", "vmta:v1", 0, complained=3)]},
])
async def test_no_drawable_flow_says_so(tmp_path, body):
    page = await render(tmp_path, body)
    assert '<p id="no-flows">No traffic in this time range.</p>' in page and "<svg" not in page


async def test_a_single_link_fills_the_column(tmp_path):
    page = await render(tmp_path, {"nodes": [node("sender", "a.example"), node("vmta", "v1")],
                                   "edges": [edge("sender:a.example", "vmta:v1", 7, bounced=1)]})
    px, height, widths, rects = geometry(page)
    assert px > 0 and widths == [pytest.approx(8 * px, abs=0.001)] and len(rects) == 2
    assert all(0 <= y and y + h <= height for _, y, h in rects)


async def test_one_huge_vmta_beside_three_hundred_small_ones(tmp_path):
    nodes = [node("sender", "a.example"), node("isp", "gmail"), *(node("vmta", f"v{i}") for i in range(301))]
    edges = [edge("sender:a.example", "vmta:v0", 1_000_000), edge("vmta:v0", "isp:gmail", 1_000_000)]
    for i in range(1, 301):
        edges += [edge("sender:a.example", f"vmta:v{i}", 1), edge(f"vmta:v{i}", "isp:gmail", 1)]
    px, height, widths, rects = geometry(await render(tmp_path, {"nodes": nodes, "edges": edges}))
    assert px > 0 and min(widths) > 0 and len(widths) == len(edges)
    assert max(widths) == pytest.approx(1_000_000 * px, abs=0.01)
    assert all(0 <= y and y + h <= height + 0.01 for _, y, h in rects)
    vmtas = sorted((y, h) for x, y, h in rects if x == min(x for x, _, _ in rects if x > 300))
    assert len(vmtas) == 301
    assert all(b[0] - a[0] >= 16 and b[0] >= a[0] + a[1] for a, b in zip(vmtas, vmtas[1:], strict=False))

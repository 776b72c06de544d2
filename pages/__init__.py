"""Server-rendered HTML pages (search, message forensics, Sankey flows) over the /api/v1 JSON.

The pages never touch a store: they call a `Backend` that answers /api/v1 paths with the JSON
those routes return, asked in-process of the app serving the page: on a daemon its correlator, on
the hub the fan-out, so one set of pages serves one host or all of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pages.backend import AsgiBackend, Backend
from pages.views import build_pages_router

__all__ = ["AsgiBackend", "Backend", "build_pages_router", "with_pages"]


def with_pages(api_router: Any, grafana_url: str = "http://localhost:3000", title: str = "PMTA Watchtower") -> Any:
    """One router holding `api_router` and the pages (under /ui) that read from it."""
    outer = APIRouter()
    outer.include_router(api_router)
    outer.include_router(build_pages_router(AsgiBackend.for_request, grafana_url, title))
    return outer

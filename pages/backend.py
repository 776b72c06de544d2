"""The pages' backend protocol: GET an /api/v1 path, get (status, JSON body) back.

`AsgiBackend` calls the very app that serves the page, in-process through httpx's ASGI transport:
no socket and no second listener, the same auth (the page request's Authorization header is
passed on), the same /api/v1 concurrency limits, and exactly the JSON (and errors) a remote
client would get. On a daemon that is the local correlator, on the hub the fan-out.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastapi import Request
from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)


class Backend(Protocol):
    async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        """GET `path` (e.g. `/api/v1/search`) with query `params`; (HTTP status, decoded JSON)."""
        ...


class AsgiBackend:
    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = {"accept": "application/json", "accept-encoding": "identity", **(headers or {})}
        self.retry_after: str | None = None
        """The last answer's Retry-After (a busy API's 503): the page passes it on with the same status."""

    @classmethod
    def for_request(cls, request: Request) -> AsgiBackend:
        auth = request.headers.get("authorization")
        return cls(request.app, {"authorization": auth} if auth else None)

    async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        import httpx  # at a page's first request: a daemon that serves no page never imports it (~30 ms a start)

        transport = httpx.ASGITransport(app=self.app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://backend", timeout=60) as client:
                resp = await client.get(path, params={k: v for k, v in params.items() if v not in (None, "")},
                                        headers=self.headers)
        except Exception:  # noqa: BLE001 - the route raised (the app answered it 500 and re-raised, as Starlette does)
            # logged here, once, with its traceback; the page shows the error box instead of becoming the JSON 500
            log.exception("page backend: GET %s raised", path)
            return 500, {"error": "internal error", "parameter": None, "status": 500}
        self.retry_after = resp.headers.get("retry-after")
        try:
            return resp.status_code, await run_in_threadpool(resp.json)  # megabytes, at times: not on the loop
        except ValueError:
            return resp.status_code, {"error": resp.text[:500], "status": resp.status_code}

"""A lookup sent as a form (POST) is answered as the same GET: the address stays out of URLs.

Every /api/v1 and /ui route is a GET, so a lookup by recipient put the address in the request line, which
reverse proxies log by default (nginx's `combined` format), browsers keep in their history and Grafana keeps in
a dashboard's URL. `curl --data-urlencode rcpt=... URL` (a POST of `application/x-www-form-urlencoded`) and the
/ui search form send it in the body instead: its fields are appended to the query string (a field given in both
takes the body's value, as a repeated parameter takes the last) and the request goes on as the GET. The body is
bounded so that the request it becomes stays within MAX_REQUEST_HEAD, and read within a time limit. While it
arrives the connection counts as idle (exporter.http's GuardedH11Protocol.in_flight): `web.header_timeout` bounds it
as it bounds a head, and past `web.max_connections` it makes way for a newcomer (a scrape).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

FORM_TYPE = "application/x-www-form-urlencoded"
FORM_PATHS = ("/api/v1/", "/ui/")
READ_SECONDS = 10.0
"""A form body not whole within this is refused (408), like a request head trickled past its timeout."""


class FormAsQuery:
    """POST of a form to an /api/v1 or /ui path -> the GET of the same path with the form in its query string."""

    def __init__(self, app: Any, max_request: int, error_body: Any, head_size: Any) -> None:
        """`error_body` and `head_size` are exporter.http's (its answers' shape; the head size its limit counts)."""
        self.app, self.max_request, self.error_body, self.head_size = app, max_request, error_body, head_size

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(FORM_PATHS) \
                or Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
            await self.app(scope, receive, send)
            return
        room = self.max_request - self.head_size(scope) - 1  # the GET it becomes stays within the head limit
        try:
            async with asyncio.timeout(READ_SECONDS):
                body = await _body(receive, room)
        except TimeoutError:
            await self._refuse(scope, receive, send, 408, f"form body not received within {READ_SECONDS:g} s")
            return
        if body is _GONE:  # the client left, or the connection was closed (evicted, past web.header_timeout): the
            # search is not run, yet an answer is sent (uvicorn drops it): with basic auth, Starlette's middleware
            # around this app logged "No response returned." with a traceback for every abandoned form
            await self._refuse(scope, receive, send, 400, "form body incomplete: the connection closed")
            return
        if body is None:
            await self._refuse(scope, receive, send, 413,
                               f"form body too large: the request it makes is at most {self.max_request} bytes")
            return
        query = b"&".join(q for q in (scope.get("query_string", b""), body.strip()) if q)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")]
        await self.app({**scope, "method": "GET", "query_string": query, "headers": headers}, _no_body, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any, status: int, error: str) -> None:
        await JSONResponse(self.error_body(status, error), status_code=status,
                           headers={"Connection": "close"})(scope, receive, send)


_GONE = b"(the client went away)"
"""What _body returns for a connection closed before its body was whole: nothing is run (the answer is dropped)."""


async def _body(receive: Any, room: int) -> bytes | None:
    """The whole body, None once it passes `room` bytes (the rest is not read: the connection closes), or _GONE."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _GONE  # the client went away (its form was run as a search for nobody)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > room:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}

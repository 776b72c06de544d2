"""The listener: /metrics, /healthz and the correlator's /api/v1 routes on one FastAPI app.

uvicorn runs inside the daemon's event loop (signals stay with the daemon), so /metrics is
rendered on the loop thread and never races the aggregator that mutates the series.
Optional TLS and basic auth (bcrypt, see exporter.webauth) follow node_exporter's web config.

Hardening, because the API holds every recipient address of the host:
- every error is an ApiError-shaped JSON body (`error`, `parameter`, `status`), 404/405 included;
- no Swagger UI (it would load scripts from a CDN), no `server:` header;
- connections are capped (ConnectionGuard): one that sends no complete request within
  `web.header_timeout` (of its opening, or of the first byte of a request after a keep-alive answer) is
  closed, one idle after an answer is closed after `web.keep_alive_timeout`, and past
  `web.max_connections` the longest-idle one is closed, so idle sockets cannot exhaust the process's
  file descriptors (which the tailer and SQLite need);
- one whose answer the client stops reading is reset after `web.send_timeout` without progress, so
  clients that send requests but never read cannot hold connections (and the cap) either;
- a request h11 cannot parse gets the same JSON 400 (GuardedH11Protocol.send_400_response), a body in more
  than MAX_BODY_CHUNKS chunks a JSON 413 (BoundedConnection);
- a request whose body is still arriving counts as idle (GuardedH11Protocol.in_flight) until it is whole or
  answered, so slow form bodies are bounded by `web.header_timeout` and make way past the cap as slow heads do;
- HEAD is answered on every GET route (HeadAsGet), gzip only when Accept-Encoding allows it (q > 0);
- accept() failures (EMFILE) are logged at most once per ACCEPT_LOG_INTERVAL, without traceback;
- on a loopback listener a request whose Host names another host is refused 421 (HostCheck, wired by make_server):
  a web page in a local browser could otherwise rebind its own DNS name to 127.0.0.1 and read /api/v1 and /ui.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import ipaddress
import logging
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable, Generator
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Match
from uvicorn.protocols.http.h11_impl import H11Protocol

from exporter import __version__, fdlimit
from exporter.config import Config
from exporter.exposition import MAX_NAMES, render_metrics, wants_gzip
from exporter.formquery import FORM_PATHS, FORM_TYPE, FormAsQuery
from exporter.webauth import BasicAuth

log = logging.getLogger("watchtower.http")

FD_RESERVE = 128
"""File descriptors kept free for the tailer, SQLite and the PMTA poller whatever the sockets do."""
ACCEPT_BATCH = 64
"""asyncio makes as many accept() calls per wake-up as the backlog given to create_server. Accepted
sockets reach the guard a couple of loop turns later, so up to ~2 batches can exceed the cap."""
LISTEN_BACKLOG = 1024
"""The kernel's queue of connections not yet accepted (set after start, apart from the batch):
a short queue would drop SYNs, and a scraper would wait a second for its retry."""
ACCEPT_LOG_INTERVAL = 10.0
MAX_REQUEST_HEAD = 16 * 1024
"""Largest request line + headers accepted, in bytes; 400 above it (docs/security.md)."""
MAX_BODY_CHUNKS = 64
"""Chunks of a chunked request body parsed at most; 413 past them. The only body read is a form's (exporter.formquery),
at most 16 KiB, and each chunk costs the event loop a parse: 16,000 one-byte chunks held it ~90 ms."""


def error_body(status: int, error: str, parameter: str | None = None) -> dict[str, Any]:
    """The ApiError shape (correlator.models.ApiError) used by every non-2xx answer of the listener."""
    return {"error": error, "parameter": parameter, "status": status}


ECHO_CHARS = 64
"""Characters of a path or method an error quotes: a 16,000-character path came back whole in its 404."""


def _cut(text: str) -> str:
    return text[:ECHO_CHARS] + ("..." if len(text) > ECHO_CHARS else "")


def build_app(
    registry: CollectorRegistry,
    health: Callable[[], dict[str, Any]],
    routers: list[Any] | None = None,
    basic_auth_users: dict[str, str] | None = None,
    refresh: Callable[[], None] | None = None,
) -> FastAPI:
    """The listener's app. `refresh`, if given, runs on the loop before each /metrics snapshot: gauges that say the
    state now (the bytes behind, which /healthz reads when asked) are set then, not only when a read pass ends."""
    # No slash redirects: Starlette builds their Location from the Host header and the listener's own scheme
    # (any host a client names; the internal http:// address behind a TLS proxy). `/metrics/` is a 404.
    app = FastAPI(title="PMTA Watchtower", version=__version__, docs_url=None, redoc_url=None,
                  description="Prometheus metrics and per-message timelines for PowerMTA.", redirect_slashes=False)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # series are copied on the loop (never concurrently with apply()), formatted and gzipped in a thread
        # as prometheus_client's parse_qs: blank values are dropped (none left: the whole page), repeats are one name
        asked = frozenset(name for name in request.query_params.getlist("name[]") if name)
        if len(asked) > MAX_NAMES:
            return JSONResponse(error_body(400, f"at most {MAX_NAMES} name[] parameters, got {len(asked)}", "name[]"),
                                status_code=400)
        accept_encoding = ", ".join(request.headers.getlist("accept-encoding"))  # repeated fields are one list
        if refresh is not None:
            refresh()
        body, headers = await render_metrics(registry, request.headers.get("accept", ""), accept_encoding,
                                             asked or None)
        return Response(body, headers=headers)

    @app.get("/healthz", summary="Liveness and tailing status")
    async def healthz() -> JSONResponse:
        state = health()
        return JSONResponse(state, status_code=200 if state.get("ok") else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> PlainTextResponse:
        def served(path: str) -> bool:  # /ui/ and /api/v1/... are served with the correlator only
            scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
            return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)

        api = "/api/v1/...    message timelines (docs/api.md)\n" if served("/api/v1/search") else ""
        pages = "/ui/           search, message forensics, flows (docs/scaling.md)\n" if served("/ui/") else ""
        return PlainTextResponse(
            "PMTA Watchtower " + __version__ + "\n\n/metrics       Prometheus metrics\n/healthz       health\n"
            + api + pages + "/openapi.json  API description\n"
        )

    for router in routers or []:
        app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = with_head_allowed(exc.headers)
        if exc.status_code == 405 and takes_a_form(request.url.path, headers):
            if request.method == "POST":  # a form was answered as its GET (FormAsQuery): this POST is none
                return JSONResponse(error_body(415, NOT_A_FORM), status_code=415, headers={"Accept-Post": FORM_TYPE})
            headers = {**(headers or {}), "Allow": (headers or {})["Allow"] + ", POST"}
        what = {404: f"no route {_cut(request.url.path)}", 405: f"method {_cut(request.method)} not allowed"}
        return JSONResponse(error_body(exc.status_code, what.get(exc.status_code, str(exc.detail))),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
        return JSONResponse(error_body(400, first.get("msg", "invalid request"), loc[-1] if loc else None), 400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's last resort (ServerErrorMiddleware) answered text/plain "Internal Server Error"
        return JSONResponse(error_body(500, "internal error"), status_code=500)

    _openapi_without_422(app)
    # gzip when the client asks (Prometheus does): /metrics pages shrink ~10x. Not for /api/v1: its
    # answers are bounded pages, and compressing them would put that CPU on the event loop.
    app.add_middleware(MetricsGZip, minimum_size=1024)

    # A lookup's form is read after the credentials are checked (a client without them is refused at once, not after
    # its body) and after the head's checks, within their bounds.
    app.add_middleware(FormAsQuery, max_request=MAX_REQUEST_HEAD, error_body=error_body, head_size=head_size)
    if basic_auth_users:
        auth = BasicAuth(basic_auth_users)

        @app.middleware("http")
        async def basic_auth(request: Request, call_next: Any) -> Response:
            # 401 bad credentials, 429 another check from this client in flight, 503 no bcrypt slot in time
            refused = await auth.authorize(request.headers.get("authorization", ""),
                                           request.client.host if request.client else "")
            if refused is not None:
                return JSONResponse(error_body(refused.status, refused.error), status_code=refused.status,
                                    headers=refused.headers)
            return await call_next(request)  # type: ignore[no-any-return]

    app.add_middleware(HeadAsGet)
    app.add_middleware(HeadSizeLimit)  # runs before auth or any route
    app.add_middleware(SafeHeaders)  # added last, so it runs first: every answer, refusals included
    return app


SAFE_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
"""On every answer that does not set its own (the /ui pages set their CSP): answers hold recipients and stored
texts, so no browser may sniff them into HTML, no proxy or browser may keep them, and none may be framed."""


class SafeHeaders:
    """Adds SAFE_HEADERS to each answer's head where it lacks them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SAFE_HEADERS if name not in present]
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


NOT_A_FORM = f"a POST here is an HTML form (Content-Type: {FORM_TYPE}) of the GET's parameters; or use GET"
"""The 415 of a POST to a route that takes a form, sent without one (no body, JSON, multipart)."""


def takes_a_form(path: str, headers: dict[str, str] | None) -> bool:
    """A GET route under /api/v1 or /ui, which answers a POSTed form as its GET (exporter.formquery): its 405
    lists POST in `Allow`, and a POST that reaches it is no form."""
    allow = (headers or {}).get("Allow", "").split(", ")
    return path.startswith(FORM_PATHS) and "GET" in allow and "POST" not in allow


def with_head_allowed(headers: dict[str, str] | None) -> dict[str, str] | None:
    """A 405's `Allow` naming HEAD wherever it names GET (HeadAsGet answers it)."""
    allow = (headers or {}).get("Allow")
    if allow is None or "GET" not in allow.split(", ") or "HEAD" in allow.split(", "):
        return headers
    return {**(headers or {}), "Allow": allow + ", HEAD"}


class HeadAsGet:
    """HEAD answered as GET without the body (RFC 9110 §9.1: a general-purpose server MUST support it).

    FastAPI routes declared with `.get` match GET only, so HEAD was 405 on every route. The route runs as
    for GET (same status and headers, Content-Length included); only the body is left out.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


def head_size(scope: dict[str, Any]) -> int:
    """Bytes of the request line + headers, rebuilt from the ASGI scope (h11 keeps no framing): exact for
    `Name: value` lines. Whitespace h11 strips around values is not counted: such padding is bounded only
    by h11's limit on an incomplete head (16 KiB) plus one socket read (256 KiB)."""
    target = len(scope.get("raw_path") or scope["path"].encode())
    if scope.get("query_string"):
        target += 1 + len(scope["query_string"])
    line = len(scope["method"]) + 1 + target + len(" HTTP/") + len(scope.get("http_version", "1.1")) + 2
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


class HeadSizeLimit:
    """400 for a request head over MAX_REQUEST_HEAD bytes.

    h11's max_incomplete_event_size (set in make_server) only refuses a head still arriving; one that
    came whole in a single read of up to 256 KiB was parsed and served. This checks every request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = head_size(scope)
            names = {name.lower() for name, _ in scope["headers"]}
            error = None
            if size > MAX_REQUEST_HEAD:
                error = f"request line + headers are {size} bytes, at most {MAX_REQUEST_HEAD}"
            elif b"content-length" in names and b"transfer-encoding" in names:  # RFC 9112 §6.1: a server MUST close
                error = "both Content-Length and Transfer-Encoding: a request a proxy may frame otherwise"
            if error is not None:
                await JSONResponse(error_body(400, error), status_code=400,
                                   headers={"Connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class MetricsGZip(GZipMiddleware):
    """Starlette's gzip, skipped for /api/ paths, and only where `wants_gzip` says gzip is acceptable.

    Starlette compresses whenever the header contains "gzip" (`gzip;q=0` included), so the decision is
    made here once and handed on as `Accept-Encoding: gzip` or no header: Starlette and the routes below
    then agree with it. Not for /metrics, which compresses its own page in a thread and names its own `Vary`
    (Starlette added a second `Accept-Encoding` to it).
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/") or scope["path"] == "/metrics":
            await self.app(scope, receive, send)  # /metrics gzips its own page (and says what it varies with)
            return
        asked = ", ".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"accept-encoding")
        headers = [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]
        if wants_gzip(asked):  # every Accept-Encoding line: repeated fields are one comma-separated list
            headers.append((b"accept-encoding", b"gzip"))
        await super().__call__({**scope, "headers": headers}, receive, send)


def _openapi_without_422(app: FastAPI) -> None:
    """Validation failures are answered 400 ApiError app-wide, so the schema must not promise a 422."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            for ops in spec.get("paths", {}).values():
                for op in ops.values():
                    responses = op.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {"description": "Bad parameter (named in `parameter`).",
                                            "content": {"application/json": {"schema": _API_ERROR_SCHEMA}}}
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for path, ops in spec.get("paths", {}).items():
                if path.startswith("/api/v1/") and "get" in ops and "post" not in ops:
                    ops["post"] = _as_form_post(ops["get"])
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _as_form_post(get: dict[str, Any]) -> dict[str, Any]:
    """The `post` operation FormAsQuery serves beside a lookup's GET: its query parameters as an HTML form (addresses
    out of URLs, docs/api.md), its path parameters as the GET's, the GET's answers and the form's own refusals."""
    query = [p for p in get.get("parameters", []) if p.get("in") == "query"]
    form: dict[str, Any] = {"type": "object", "properties": {
        p["name"]: {**p.get("schema", {}), **({"description": p["description"]} if "description" in p else {})}
        for p in query}}
    if required := [p["name"] for p in query if p.get("required")]:
        form["required"] = required
    refusal = {"application/json": {"schema": _API_ERROR_SCHEMA}}
    return {
        **{k: v for k, v in get.items() if k not in ("parameters", "operationId", "summary")},
        "summary": f"{get.get('summary', '')} (the query as a form)".strip(),
        "operationId": f"{get.get('operationId', 'operation')}_form",
        "parameters": [p for p in get.get("parameters", []) if p.get("in") != "query"],
        "requestBody": {"required": True, "content": {FORM_TYPE: {"schema": form}}},
        "responses": {**get.get("responses", {}),
                      "408": {"description": "Form body not received in time.", "content": refusal},
                      "413": {"description": "Form body too large.", "content": refusal},
                      "415": {"description": f"Not a form: send {FORM_TYPE}, or use GET.", "content": refusal}},
    }


_API_ERROR_SCHEMA = {
    "type": "object", "title": "ApiError", "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "parameter": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                   "status": {"type": "integer"}},
}


# --- exposure -----------------------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def exposure_warning(config: Config, exposed: str = "/metrics and every stored recipient through /api/v1"
                     ) -> str | None:
    """A warning line when the listener is reachable off-host without auth or TLS, else None; `exposed` says what
    anyone could then read (the hub serves no /metrics), or, with auth but no TLS, what crosses the network in clear.

    The daemon and the hub log it at WARNING at startup. Loopback binds never warn (a local reverse proxy
    adds TLS and auth in front).
    """
    if _is_loopback(config.listen_host):
        return None
    web = config.web
    missing = [name for name, present in (("basic auth", bool(web.basic_auth_users)),
                                          ("TLS", web.tls_cert_file is not None)) if not present]
    if not missing:
        return None
    if missing == ["TLS"]:  # who reaches the port is asked for a password: what is exposed is what crosses the wire
        return (f"listening on {config.listen} (not loopback) without TLS: passwords, and {exposed}, cross the "
                "network in clear text. Set web.tls_cert_file/tls_key_file, or bind 127.0.0.1 behind a reverse proxy "
                "with TLS (docs/security.md).")
    return (f"listening on {config.listen} (not loopback) without {' and '.join(missing)}: anyone who can reach "
            f"this port can read {exposed}. Set web.basic_auth_users "
            "and web.tls_cert_file/tls_key_file, or bind 127.0.0.1 behind a reverse proxy (docs/security.md).")


# --- Host names (DNS rebinding) -------------------------------------------------------------------

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Host names every checked listener answers to (besides any other 127.x address and [::1] spelled otherwise)."""
MISDIRECTED = ("this listener does not answer to the host named in the Host header: only localhost, loopback "
               "addresses, the listen host and web.allowed_hosts (docs/security.md)")


def host_names(config: Config) -> frozenset[bytes] | None:
    """The hosts a `Host` header may name (lower case, IPv6 bracketed), or None when any is answered: a listener
    off loopback without `web.allowed_hosts`."""
    allowed = getattr(config.web, "allowed_hosts", None) or []
    if not allowed and not _is_loopback(config.listen_host):
        return None
    listen = config.listen_host.lower().removesuffix(".")
    try:
        address = ipaddress.ip_address(listen)
        listen = f"[{address.compressed}]" if address.version == 6 else address.compressed
    except ValueError:
        pass
    return frozenset(name.encode("utf-8") for name in (*LOOPBACK_NAMES, listen, *allowed))


def host_allowed(value: bytes, names: frozenset[bytes]) -> bool:
    """Whether a `Host` header's value names one of `names` (or a loopback address), its port ignored: `ssh -L`
    tunnels and port mappings change the port. An empty value names no host (HTTP/1.0 clients send none)."""
    if not value:
        return True
    host = value.lower()
    if host[:1] == b"[":
        end = host.find(b"]") + 1  # no `]`: empty, refused
        host, port = host[:end], host[end:]
    else:
        host, colon, port = host.partition(b":")
        port = colon + port
    if port and not (port[:1] == b":" and (len(port) == 1 or port[1:].isdigit())):  # a name, then `:digits` or none
        return False
    if host[-1:] == b".":
        host = host[:-1]
    return host in names or _other_spelling(host, names)


def _other_spelling(host: bytes, names: frozenset[bytes]) -> bool:
    """An address literal that is loopback, or one of `names` written otherwise (`[0:0::1]`, `127.1.2.3`). Never a
    DNS name: `127.0.0.1.attacker.example` is no address."""
    try:
        if host[:1] == b"[" and host[-1:] == b"]":
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host[1:-1].decode("ascii"))
            spelled = f"[{address.compressed}]"
        elif host[:1].isdigit():
            address = ipaddress.IPv4Address(host.decode("ascii"))
            spelled = address.compressed
        else:
            return False
    except ValueError:  # UnicodeDecodeError included
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback) or spelled.encode() in names


_SAFE_HEADER_TEXT = {name.decode(): value.decode() for name, value in SAFE_HEADERS}


class HostCheck:
    """421 for a request whose `Host` names a host the listener does not answer to (host_names), before auth, the
    head checks or any route. Outside the app, so only the served listener checks (make_server); the refusal carries
    SAFE_HEADERS as every answer does."""

    def __init__(self, app: Any, names: frozenset[bytes]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"host" and not host_allowed(value, self.names):  # every Host field, if several
                    await JSONResponse(error_body(421, MISDIRECTED), status_code=421,
                                       headers=_SAFE_HEADER_TEXT)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# --- connections ---------------------------------------------------------------------------------

EVICT_BUSY_AFTER = 5.0
"""Past web.max_connections with every connection answering, the one whose answer has been in flight longest makes
way for the newcomer once that is this many seconds: clients reading their answers at a trickle (always in flight,
never stalled) held every slot and kept scrapes out. A scrape's answer takes well under a second."""


class ConnectionGuard:
    """Tracks open HTTP connections; closes idle ones past the header timeout or the cap, stalled ones
    past the send timeout.

    "Idle" means no request in flight: waiting for the first request (or the rest of its head or body: a form
    body still arriving, with no answer begun, is bounded as a late head is), or between keep-alive requests.
    A connection with a request being answered is cut only when its
    answer makes no progress for `send_timeout` (the client does not read it): otherwise clients that
    pipeline requests and never read would hold every slot, and past the cap newcomers were refused.

    `header_timeout` counts from the connection's opening, or on a kept-alive connection from the first byte of its
    next request: one idle after an answer with no byte of another (`kept_alive`) is uvicorn's keep-alive timer's
    to close, after `web.keep_alive_timeout` (header_timeout closed it first, ~header_timeout after the answer,
    whatever keep_alive_timeout said). `keep_alive_timeout` (when given) is only a backstop here: such a
    connection still open `header_timeout` past it is closed as a late head is.
    """

    def __init__(self, max_connections: int, header_timeout: float, send_timeout: float = 30.0,
                 keep_alive_timeout: float | None = None) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.waiting: dict[GuardedH11Protocol, float] = {}  # every open connection, oldest idle first
        self.kept_alive: set[GuardedH11Protocol] = set()  # idle after an answer, no byte of a next request yet
        self.evicted = 0
        self.timed_out = 0
        self.stalled = 0

    def opened(self, proto: GuardedH11Protocol) -> None:
        now = time.monotonic()
        self.waiting[proto] = now
        if len(self.waiting) > self.max_connections:
            for other in self.waiting:
                if other is not proto and not other.in_flight():
                    self.evicted += 1
                    other.drop()
                    return
            # every other connection is answering: the one answering longest makes way, if that is long
            busy = max((p for p in self.waiting if p is not proto), key=lambda p: p.answering_for(now), default=None)
            self.evicted += 1
            if busy is not None and busy.answering_for(now) >= EVICT_BUSY_AFTER:
                busy.reset()  # what it has not read is discarded (a FIN would queue behind it)
            else:
                proto.drop()  # all answers are young: refuse the newcomer

    def idle_again(self, proto: GuardedH11Protocol) -> None:
        """An answer is complete: idle from now, kept alive unless bytes of a next request came already."""
        if proto in self.waiting:
            del self.waiting[proto]
            self.waiting[proto] = time.monotonic()
            if proto.awaits_next_request():
                self.kept_alive.add(proto)
            else:
                self.kept_alive.discard(proto)

    def request_begun(self, proto: GuardedH11Protocol) -> None:
        """Bytes arrived: on a kept-alive connection the first of a next request, whose head header_timeout
        bounds from now (uvicorn's keep-alive timer stops at that byte). Later bytes do not restart the clock."""
        if proto in self.kept_alive:
            self.kept_alive.discard(proto)
            if proto in self.waiting:
                del self.waiting[proto]
                self.waiting[proto] = time.monotonic()

    def closed(self, proto: GuardedH11Protocol) -> None:
        self.waiting.pop(proto, None)
        self.kept_alive.discard(proto)

    def sweep(self) -> None:
        now = time.monotonic()
        cutoff = now - self.header_timeout
        kept_cutoff = (-float("inf") if self.keep_alive_timeout is None
                       else cutoff - self.keep_alive_timeout)  # a backstop: uvicorn closes them at keep_alive_timeout
        late = [p for p, since in self.waiting.items()
                if since < (kept_cutoff if p in self.kept_alive else cutoff) and not p.in_flight()]
        for proto in late:
            self.timed_out += 1
            proto.drop()
        for proto in self.waiting:
            proto.answering_for(now)  # notice each new answer now: its age counts from here at the latest
        stuck = [p for p in self.waiting if p.write_stalled(now, self.send_timeout)]
        for proto in stuck:
            self.stalled += 1
            proto.reset()


class BoundedConnection(h11.Connection):
    """h11's server side, refusing (413) a request body at its first chunk past MAX_BODY_CHUNKS: uvicorn parses
    every event a read brings before the route runs, so a body of 16,000 one-byte chunks (or of long chunk
    extensions, which the form's size cap does not count) was parsed whole on the event loop."""

    _chunks = 0
    _refused: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        if self._refused is not None:
            raise self._refused
        event = super().next_event()
        if isinstance(event, h11.Request):
            self._chunks = 0
        elif isinstance(event, h11.Data) and event.chunk_start:
            self._chunks += 1
            if self._chunks > MAX_BODY_CHUNKS:
                self._refused = h11.RemoteProtocolError(f"request body in more than {MAX_BODY_CHUNKS} chunks", 413)
                raise self._refused
        return event


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol reporting to a ConnectionGuard (bound by `guarded_protocol`), and answering
    requests h11 cannot parse with the listener's JSON error (413 for a body in too many chunks)."""

    guard: ConnectionGuard
    _pending = 0  # bytes in the write buffer at the last write_stalled() sample
    _queued = 0  # bytes in the kernel's send queue at that sample
    _progress_at = 0.0  # when a sample last saw progress (or an empty buffer)
    _drained = False  # the transport resumed writing since the last sample
    _seen_cycle: object = None  # the request cycle `answering_for` last saw, and when it first saw it
    _cycle_seen_at = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = BoundedConnection(h11.SERVER, self.conn._max_incomplete_event_size)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self.guard.idle_again(self)
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        if data:
            self.guard.request_begun(self)
        super().data_received(data)

    def awaits_next_request(self) -> bool:
        """Open, with no byte of a next request received (h11 holds none): idle between keep-alive requests."""
        return (self.transport is not None and not self.transport.is_closing()
                and not self.conn.trailing_data[0])

    def resume_writing(self) -> None:
        self._drained = True
        super().resume_writing()

    def in_flight(self) -> bool:
        """A request being answered: its body whole (the route runs on it) or its answer begun. One whose body is
        still arriving with no answer begun is idle, as one whose head is: past the cap it makes way for a newcomer,
        and header_timeout bounds it. Counted busy, form bodies trickled on every slot (a byte per 0.5 s, each
        connection renewed within EVICT_BUSY_AFTER) kept scrapes out."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return False
        return cycle.response_started or self.conn.their_state is not h11.SEND_BODY

    def answering_for(self, now: float) -> float:
        """Seconds the answer in flight has been seen in flight (0 when none): a request cycle is noticed at the
        first look (a sweep, or an eviction's), so the age is at most a sweep short."""
        if not self.in_flight():
            return 0.0
        if self.cycle is not self._seen_cycle:
            self._seen_cycle, self._cycle_seen_at = self.cycle, now
        return now - self._cycle_seen_at

    def write_stalled(self, now: float, limit: float) -> bool:
        """True when answer bytes have waited in the write buffer `limit` seconds with none taken by the client.

        Sampled at each sweep. Progress since the last sample is the buffer emptying, shrinking or draining
        below the low-water mark (resume_writing), or the kernel's queue for the peer shrinking: a slow
        reader acknowledges bytes for seconds before the kernel, whose socket buffer holds megabytes, takes
        more from ours. Covers a closing transport too (close() waits for the buffer to flush, forever).
        """
        size = self.transport.get_write_buffer_size() if self.transport is not None else 0
        queued = kernel_queued(self.transport.get_extra_info("socket")) if size else 0
        if (size == 0 or self._pending == 0 or size < self._pending or queued < self._queued
                or self._drained):
            self._progress_at = now
        self._pending, self._queued, self._drained = size, queued, False
        return size > 0 and now - self._progress_at >= limit

    def drop(self) -> None:
        self.guard.closed(self)
        if self.transport is None:
            return
        if self.transport.get_write_buffer_size():
            self.reset()  # a client that does not read must not pin the socket, even one already closing
        elif not self.transport.is_closing():
            self.transport.close()

    def reset(self) -> None:
        """Abort with an RST (SO_LINGER 0): the kernel discards what the client never read instead of
        keeping it queued (megabytes) behind a FIN the client would never reach."""
        self.guard.closed(self)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot parse (request line, header, chunked body, a head past
        h11's limit), as the listener's JSON error instead of text/plain; the connection is then closed.

        Called by uvicorn inside `except h11.RemoteProtocolError`; BoundedConnection's refusal is answered 413.
        A request whose body turns out malformed (or too many chunks) may have its route still running: it is
        marked disconnected (its writes are dropped, as for a client that left), so its own answer does not
        follow the 400 (h11 refused it with a traceback)."""
        exc = sys.exc_info()[1]
        hint = getattr(exc, "error_status_hint", None)
        status, reason = (413, b"Content Too Large") if hint == 413 else (400, b"Bad Request")  # BoundedConnection
        if hint == 413:
            error = str(exc)
        elif hint == 431:  # h11: "Receive buffer too long"
            error = f"request line + headers are over {MAX_REQUEST_HEAD} bytes, at most {MAX_REQUEST_HEAD}"
        else:
            error = "malformed HTTP request"
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # else an answer has begun: just close
            body = JSONResponse(error_body(status, error)).body
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            with contextlib.suppress(h11.LocalProtocolError):
                self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers,
                                                                 reason=reason)) or b"")
                self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()


TLS_SHUTDOWN_TIMEOUT = 2.0
"""Seconds a closed TLS connection waits for the client's close_notify before its socket is released."""


def kernel_queued(sock: Any) -> int:
    """Bytes the kernel holds for the peer, sent but unacknowledged or unsent (Linux SIOCOUTQ); 0 if unknown."""
    request = getattr(termios, "TIOCOUTQ", None)
    if sock is None or request is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    return type("GuardedH11", (GuardedH11Protocol,), {"guard": guard})


def connection_cap(configured: int, reserve: int = FD_RESERVE) -> int:
    """max_connections, lowered to leave `reserve` descriptors free under RLIMIT_NOFILE (the tailer's share and the
    rest of the process: exporter/fdlimit.py)."""
    soft = fdlimit.soft_limit()
    if soft is None:
        return configured
    return max(8, min(configured, soft - reserve - 2 * ACCEPT_BATCH))


class AcceptErrorLog:
    """Loop exception handler: accept() failures once per interval with a count, others unchanged."""

    def __init__(self, previous: Any, interval: float = ACCEPT_LOG_INTERVAL) -> None:
        self.previous = previous
        self.interval = interval
        self.suppressed = 0
        self.last = -interval

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            now = time.monotonic()
            if now - self.last >= self.interval:
                exc = context.get("exception")
                log.error("accept() failed: %s (%d more in the last %.0fs); new connections wait",
                          exc, self.suppressed, self.interval)
                self.last, self.suppressed = now, 0
            else:
                self.suppressed += 1
            return
        if isinstance(context.get("exception"), ValueError) and "_start_serving" in repr(context.get("handle")):
            # asyncio's accept retry (scheduled after EMFILE) firing after the listener closed at shutdown.
            log.debug("accept retry after the listener closed: %s", context.get("exception"))
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def _every_ipv6_address(host: str) -> bool:
    """`::` in any spelling (`::0`, `0:0:0:0:0:0:0:0`)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 6 and address.is_unspecified


def every_address_socket(port: int, backlog: int) -> socket.socket:
    """`[::]`, every address of the host: IPv6 and IPv4 both, as node_exporter's `[::]:9100`. asyncio binds an
    IPv6 socket IPv6-only, so a Prometheus scraping the host's IPv4 address was refused while the healthcheck (over
    ::1) said healthy. A bind failure raises OSError (the daemon reports it in one line, exit 1)."""
    return socket.create_server(("::", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling (the daemon decides when to stop), plus the guard."""

    guard: ConnectionGuard | None = None
    handshake_timeout: float = 10.0

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn versions
        return None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(AcceptErrorLog(loop.get_exception_handler()))
        if sockets is None and _every_ipv6_address(self.config.host) and socket.has_dualstack_ipv6():
            sockets = [every_address_socket(self.config.port, self.config.backlog)]
        if self.config.ssl is None:
            await super().startup(sockets)
        else:
            # A TLS client that never finishes its handshake is invisible to the guard (the protocol
            # sees the connection only after it): bound it like a request head (asyncio's default is 60 s).
            # A connection closed (evicted, timed out, kept alive too long) waits for the client's close_notify:
            # uncounted by the guard by then, so bounded too (asyncio's default, 30 s, let clients that never read
            # hold a descriptor each past max_connections).
            loop.create_server = functools.partial(  # type: ignore[method-assign]
                loop.create_server, ssl_handshake_timeout=self.handshake_timeout,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT)
            try:
                await super().startup(sockets)
            finally:
                del loop.create_server  # back to the class's method
        for server in getattr(self, "servers", []):
            for tsock in server.sockets:
                with contextlib.suppress(OSError), tsock.dup() as sock:
                    sock.listen(LISTEN_BACKLOG)  # same listening socket, longer kernel queue

    async def on_tick(self, counter: int) -> bool:
        if self.guard is not None and counter % 10 == 0:
            self.guard.sweep()
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's graceful shutdown waits for every connection to finish its answer, and on_tick no longer
        runs: a client that stopped reading would hold the daemon's exit forever, so the guard keeps sweeping."""
        sweeper = asyncio.create_task(self._keep_sweeping()) if self.guard is not None else None
        try:
            await super().shutdown(sockets)
        finally:
            if sweeper is not None:
                sweeper.cancel()

    async def _keep_sweeping(self) -> None:
        assert self.guard is not None
        while True:
            await asyncio.sleep(1.0)
            self.guard.sweep()


def make_server(app: FastAPI, config: Config) -> EmbeddedServer:
    from correlator.api import ApiLimits

    web = config.web
    app.state.api_limits = ApiLimits(web.api_max_concurrency, web.api_queue_timeout, web.api_query_timeout)
    tail = getattr(config, "tail", None)  # (the hub's config has no files to tail)
    reserve = FD_RESERVE if tail is None else max(FD_RESERVE, fdlimit.reserved(tail.max_open_files))
    guard = ConnectionGuard(connection_cap(web.max_connections, reserve), web.header_timeout, web.send_timeout,
                            web.keep_alive_timeout)
    names = host_names(config)
    ucfg = uvicorn.Config(
        app if names is None else HostCheck(app, names),  # not in the app: in-process clients name any host
        host=config.listen_host,
        port=config.listen_port,
        http=guarded_protocol(guard),
        log_level=config.log_level if config.log_level != "info" else "warning",
        log_config=None,  # logging is set up once by exporter.logsetup; uvicorn's records go through it
        access_log=False,
        lifespan="off",
        ws="none",  # no WebSocket route: an Upgrade is an ordinary HTTP request, behind auth and the head limit
        server_header=False,
        # X-Forwarded-For is the client's to write: uvicorn's default trusts it from 127.0.0.1 (or FORWARDED_ALLOW_IPS),
        # so a loopback peer chose request.client, the address basic auth's one-check-in-flight limit counts by
        proxy_headers=False,
        timeout_keep_alive=web.keep_alive_timeout,  # type: ignore[arg-type]  # float works (call_later)
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        backlog=ACCEPT_BATCH,
        ssl_certfile=str(web.tls_cert_file) if web.tls_cert_file else None,
        ssl_keyfile=str(web.tls_key_file) if web.tls_key_file else None,
    )
    server = EmbeddedServer(ucfg)
    server.guard = guard
    server.handshake_timeout = max(0.1, web.header_timeout)
    return server

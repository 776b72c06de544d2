"""The listener: /metrics, /healthz and the correlator's /api/v1 routes on one FastAPI app.

uvicorn runs inside the daemon's event loop (signals stay with the daemon), so /metrics is
rendered on the loop thread and never races the aggregator that mutates the series.
Optional TLS and basic auth follow node_exporter's web config in spirit.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.config import Config


def build_app(
    registry: CollectorRegistry,
    health: Callable[[], dict[str, Any]],
    routers: list[Any] | None = None,
    basic_auth_users: dict[str, str] | None = None,
) -> FastAPI:
    app = FastAPI(title="PMTA Watchtower", version=__version__,
                  description="Prometheus metrics and per-message timelines for PowerMTA.")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # async on purpose: exposition runs on the loop thread, never concurrently with apply().
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    @app.get("/healthz", summary="Liveness and tailing status")
    async def healthz() -> JSONResponse:
        state = health()
        return JSONResponse(state, status_code=200 if state.get("ok") else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> PlainTextResponse:
        return PlainTextResponse(
            "PMTA Watchtower " + __version__ + "\n\n/metrics       Prometheus metrics\n/healthz       health\n"
            "/api/v1/...    message timelines (see /docs)\n/openapi.json  API description\n"
        )

    for router in routers or []:
        app.include_router(router)

    if basic_auth_users:
        users = dict(basic_auth_users)

        @app.middleware("http")
        async def basic_auth(request: Request, call_next: Any) -> Response:
            if not _authorized(request.headers.get("authorization", ""), users):
                return PlainTextResponse("unauthorized\n", status_code=401,
                                         headers={"WWW-Authenticate": 'Basic realm="watchtower"'})
            return await call_next(request)  # type: ignore[no-any-return]

    return app


def _authorized(header: str, users: dict[str, str]) -> bool:
    if not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return False
    expected = users.get(user)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn versions
        return None


def make_server(app: FastAPI, config: Config) -> EmbeddedServer:
    web = config.web
    ucfg = uvicorn.Config(
        app,
        host=config.listen_host,
        port=config.listen_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(web.tls_cert_file) if web.tls_cert_file else None,
        ssl_keyfile=str(web.tls_key_file) if web.tls_key_file else None,
    )
    return EmbeddedServer(ucfg)

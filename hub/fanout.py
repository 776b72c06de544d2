"""Concurrent GETs to every daemon, each bounded by the per-host timeout, never raising.

A host that refuses, times out, answers 5xx or garbage becomes a `HostAnswer` with `error` set:
the merge layer turns those into a partial answer naming the host. The bound is enforced with
`asyncio.wait_for` around the whole request, since httpx's timeouts apply per read and a server
that drips bytes could otherwise hold a request far longer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from correlator.models import FlowsResponse, MessageResponse, SearchResponse, TimelineResponse
from correlator.replies import LookupResponse, RepliesResponse
from exporter.preflight import no_passphrase
from hub.config import HubSection
from hub.targets import Target

ANSWER_MODELS: dict[str, type[BaseModel]] = {
    "/api/v1/search": SearchResponse, "/api/v1/flows": FlowsResponse, "/api/v1/replies": RepliesResponse,
    "/api/v1/lookup": LookupResponse, "/api/v1/timeline": TimelineResponse,
}
"""A daemon's 200 answer per route, as the daemon declares it: anything else (an older or a newer daemon, a proxy's
page) is a missing host, so that no host's answer turns into a 500 of the hub's."""
ANSWER_PREFIXES: tuple[tuple[str, type[BaseModel]], ...] = (
    ("/api/v1/messages/", MessageResponse), ("/api/v1/timelines/", TimelineResponse))


def answer_model(path: str) -> type[BaseModel] | None:
    model = ANSWER_MODELS.get(path)
    if model is None:
        model = next((m for prefix, m in ANSWER_PREFIXES if path.startswith(prefix)), None)
    return model


@dataclass
class HostAnswer:
    target: Target
    status: int = 0
    body: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _verify(section: HubSection) -> ssl.SSLContext | bool:
    tls = section.tls
    if tls.insecure_skip_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None, password=no_passphrase)
    return ctx


def _read_secret(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def make_client(section: HubSection) -> httpx.AsyncClient:
    """One pooled client for all daemons, with the configured auth and TLS (secrets read from files)."""
    headers = {"accept": "application/json", "user-agent": "watchtower-hub"}
    auth: httpx.Auth | None = None
    if section.auth.bearer_token_file:
        headers["authorization"] = "Bearer " + _read_secret(section.auth.bearer_token_file)
    elif section.auth.username and section.auth.password_file:
        auth = httpx.BasicAuth(section.auth.username, _read_secret(section.auth.password_file))
    t = section.timeout
    return httpx.AsyncClient(
        headers=headers, auth=auth, verify=_verify(section), timeout=httpx.Timeout(t, connect=t),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50), follow_redirects=False,
        trust_env=False,
    )


DAEMON_ANSWERS = frozenset({200, 400, 404})
"""The statuses a daemon answers a query with (found, a bad parameter, nothing stored); any other means the host
could not be asked, and the hub says so (missing_hosts), never that it found nothing."""


class Fanout:
    """GET one path on many targets at once."""

    def __init__(self, client: httpx.AsyncClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def one(self, target: Target, path: str, params: dict[str, Any], deadline: float | None = None) -> HostAnswer:
        budget = self.timeout if deadline is None else max(0.0, min(self.timeout, deadline - time.monotonic()))
        start = time.monotonic()
        ans = HostAnswer(target)
        try:
            resp = await asyncio.wait_for(self.client.get(target.url + path, params=params), budget)
            ans.status = resp.status_code
            if resp.status_code not in DAEMON_ANSWERS:  # 429 (its auth check busy), 401, 5xx...: not asked
                ans.error = f"HTTP {resp.status_code}: {_short(resp.text)}"
            else:
                ans.body = resp.json()
                model = answer_model(path) if resp.status_code == 200 else None
                if model is not None:
                    try:
                        model.model_validate(ans.body)
                    except ValidationError as exc:
                        where = ".".join(str(x) for x in exc.errors()[0]["loc"]) or "body"
                        ans.error, ans.body = f"HTTP 200: not a watchtower {path} answer ({where})", None
        except TimeoutError:
            ans.error = f"timed out after {budget:.3g}s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL (a bad port, an unexpanded template in a
            # file_sd list) is no HTTPError: that one host is missing, every route goes on
            ans.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than json's recursion limit
            ans.error = f"HTTP {ans.status}: not JSON"
        ans.seconds = time.monotonic() - start
        return ans

    async def all(
        self, targets: list[Target], path: str, params: dict[str, Any], deadline: float | None = None
    ) -> list[HostAnswer]:
        return list(await asyncio.gather(*(self.one(t, path, params, deadline) for t in targets)))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")

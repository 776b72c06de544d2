"""The /api/v1 routes: one FastAPI APIRouter the daemon mounts next to /metrics.

Routes are sync `def`, so FastAPI runs them in its threadpool and a slow query never blocks the
event loop; each request borrows a read connection from the pool and sees one snapshot.
Errors never escape as 500s: a route class turns validation failures and our own `BadRequest`
into `{"error", "parameter", "status"}` bodies (the router cannot install app-wide handlers).

Unauthenticated clients must not starve /metrics: at most `ApiLimits.max_concurrency` requests
run at once (others wait `queue_timeout`, then 503), and each request's SQLite work is interrupted
by a progress handler after `query_timeout` (503). Every input is bounded before it reaches SQLite
or datetime: times to 1970..9999, ids to int64, cursors to a short flat JSON triple.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from correlator import render, store
from correlator.keys import RcptHasher, job_hash, message_hash, norm_message_id
from correlator.models import (
    ApiError,
    FlowsResponse,
    MessageResponse,
    Outcome,
    SearchResponse,
    TimelineResponse,
)
from correlator.store import ReadPool, StoreNotReady
from correlator.timeline import ClassOf, Reader, iso

log = logging.getLogger(__name__)

Format = Literal["json", "text"]
FormatParam = Annotated[
    Format | None, Query(description="`text` renders for a terminal (as does `Accept: text/plain`); default JSON.")
]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TEXT = {200: {"content": {"application/json": {}, "text/plain": {}}}}
MIN_TIME, MAX_TIME = 0.0, 253402300799.0  # 1970-01-01 .. 9999-12-31T23:59:59Z
MAX_ID = 2**63 - 1
MAX_CURSOR = 200
PROGRESS_STEPS = 20_000
"""SQLite VM steps between two looks at the clock (~1 ms of work)."""


@dataclass(frozen=True)
class ApiLimits:
    """How much of the machine /api/v1 may take (from `web.api_*`; the listener puts it on app.state)."""

    max_concurrency: int = 2
    queue_timeout: float = 2.0
    query_timeout: float = 5.0


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("api_deadline", default=None)


class QueryBudgetExceeded(Exception):
    pass


class BadRequest(Exception):
    def __init__(self, status: int, error: str, parameter: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.parameter = status, error, parameter


def _error(status: int, error: str, parameter: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ApiError(error=error, parameter=parameter, status=status).model_dump(), status_code=status,
                        headers=headers)


class ErrorRoute(APIRoute):
    """Maps every failure of our routes to an ApiError JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            limits: ApiLimits = getattr(request.app.state, "api_limits", None) or ApiLimits()
            slots = getattr(request.app.state, "api_slots", None)
            if slots is None:
                slots = request.app.state.api_slots = asyncio.Semaphore(limits.max_concurrency)
            try:
                await asyncio.wait_for(slots.acquire(), timeout=limits.queue_timeout)
            except TimeoutError:
                return _error(503, "too many concurrent API requests; retry later", None,
                              {"Retry-After": str(max(1, math.ceil(limits.queue_timeout)))})
            token = _DEADLINE.set(time.monotonic() + limits.query_timeout)
            try:
                return await handler(request)
            except QueryBudgetExceeded:
                return _error(503, f"query exceeded its time budget ({limits.query_timeout:g}s); narrow the "
                              "filters (rcpt or job_id) or the time range", None)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
                return _error(400, first.get("msg", "invalid request"), loc[-1] if loc else None)
            except BadRequest as exc:
                return _error(exc.status, exc.error, exc.parameter)
            except StoreNotReady as exc:
                return _error(503, f"correlator store not ready: {exc}")
            except sqlite3.OperationalError as exc:
                log.warning("correlator query failed: %s", exc)
                return _error(503, f"correlator store busy: {exc}")
            finally:
                _DEADLINE.reset(token)
                slots.release()

        return wrapped


def parse_time(name: str, value: str | None, now: float) -> float | None:
    """Epoch seconds, ISO 8601 (naive = UTC) or a duration back from now (`15m`, `2h`, `7d`)."""
    if value is None or value == "":
        return None
    v = value.strip()
    m = _DURATION.match(v)
    try:
        if m:
            ts = now - float(m.group(1)) * _UNITS[m.group(2)]
        else:
            try:
                ts = float(v)
            except ValueError:
                dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=UTC)
                ts = dt.timestamp()
    except (ValueError, OverflowError):
        raise BadRequest(400, f"invalid time {value[:64]!r}: use epoch seconds, ISO 8601 or e.g. 15m, 7d",
                         name) from None
    if not MIN_TIME <= ts <= MAX_TIME:  # also false for nan
        raise BadRequest(400, f"time {value[:64]!r} is out of range (1970-01-01 .. 9999-12-31)", name)
    return ts


def _json(model: type[BaseModel], body: dict[str, Any]) -> Response:
    """Validate and encode with the response model here, in the worker thread: for a returned dict
    FastAPI would encode on the event loop, where every millisecond delays /metrics."""
    return Response(model.model_validate(body).model_dump_json(), media_type="application/json")


def _want_text(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "text"
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


def _cursor_encode(pos: tuple[float, int], fingerprint: str) -> str:
    raw = json.dumps([pos[0], pos[1], fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str, fingerprint: str) -> tuple[float, int]:
    """(t0, id) from a cursor; anything but a short [number, int, str] triple is a 400, never a 500."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if raw.count(b"[") > 1 or raw.count(b"{"):
            raise ValueError("nested")
        t0, tl, fp = json.loads(raw)
        if isinstance(t0, bool) or not isinstance(t0, int | float) or not isinstance(tl, int) \
                or isinstance(tl, bool) or not isinstance(fp, str):
            raise ValueError("types")
        pos = (float(t0), tl)
        if not (math.isfinite(pos[0]) and MIN_TIME <= pos[0] <= MAX_TIME and 0 <= tl <= MAX_ID):
            raise ValueError("range")
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError):
        raise BadRequest(400, "malformed cursor", "cursor") from None
    if fp != fingerprint:
        raise BadRequest(400, "cursor belongs to a search with other filters", "cursor")
    return pos


class Api:
    """What the routes need: the read pool, the recipient hasher, the classifier and a clock."""

    def __init__(
        self, pool: ReadPool, hasher: RcptHasher, class_of: ClassOf, max_flow_senders: int,
        clock: Callable[[], float],
    ) -> None:
        self.pool = pool
        self.hasher = hasher
        self.class_of = class_of
        self.max_flow_senders = max_flow_senders
        self.clock = clock

    def reader(self, conn: sqlite3.Connection) -> Reader:
        return Reader(conn, self.class_of, self.hasher.hashed)

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection whose queries stop at the request's deadline (QueryBudgetExceeded)."""
        deadline = _DEADLINE.get()
        with self.pool.connection() as conn:
            if deadline is None:
                yield conn
                return
            fired = []

            def over_budget() -> int:
                if time.monotonic() > deadline:
                    fired.append(True)
                    return 1
                return 0

            conn.set_progress_handler(over_budget, PROGRESS_STEPS)
            try:
                yield conn
            except sqlite3.OperationalError:
                if fired:
                    raise QueryBudgetExceeded() from None
                raise
            finally:
                conn.set_progress_handler(None, 0)

    def rcpt_key(self, rcpt: str, name: str = "rcpt") -> int:
        value = rcpt.strip().lower()
        if not value:
            raise BadRequest(400, "empty recipient", name)
        return self.hasher(value)[0]


def redirect_double_slash(router: APIRouter) -> None:
    """Answer `//api/v1/...` with a 308 to `/api/v1/...` (daemon and hub alike): Grafana's Infinity data
    source joins a base URL ending in `/` and a query URL starting with `/`."""

    @router.get("//api/v1/{rest:path}", include_in_schema=False)
    def double_slash(rest: str, request: Request) -> RedirectResponse:
        query = request.url.query
        return RedirectResponse("/api/v1/" + rest.lstrip("/") + ("?" + query if query else ""), status_code=308)


def build_router(api: Api) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["correlator"], route_class=ErrorRoute)
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ApiError, "description": "Bad parameter (named in `parameter`)."},
        404: {"model": ApiError, "description": "Nothing stored for this key."},
        503: {"model": ApiError, "description": "Store not ready or busy, too many concurrent API requests, "
              "or the query exceeded its time budget."},
        # Declaring `default` also stops FastAPI from listing a 422 the server never sends.
        "default": {"model": ApiError, "description": "Any other error (401, 405): same body."},
    }

    @router.get("/messages/{message_id:path}", response_model=MessageResponse, responses={**errors, **_TEXT},
                summary="Every recipient's timeline of one Message-Id")
    def get_message(
        request: Request,
        message_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most recipients returned.")] = 100,
        format: FormatParam = None,
    ) -> Any:
        mid = norm_message_id(message_id)
        if not mid:
            raise BadRequest(400, "empty Message-Id", "message_id")
        with api.connection() as conn:
            items, total = api.reader(conn).by_message(message_hash(mid), limit)
        if not items:
            raise BadRequest(404, f"no timeline for Message-Id {mid!r}", "message_id")
        body = {"message_id": mid, "recipients_total": total, "truncated": total > len(items), "recipients": items}
        if _want_text(request, format):
            note = f"({len(items)} of {total} recipients)" if total > len(items) else ""
            return PlainTextResponse(render.timelines(f"Message-Id <{mid}>", items, note))
        return _json(MessageResponse, body)

    @router.get("/timeline", response_model=TimelineResponse, responses={**errors, **_TEXT},
                summary="Timeline of one recipient of one job (or Message-Id)")
    def get_timeline(
        request: Request,
        rcpt: Annotated[str, Query(description="Recipient address (hashed server-side when hash_recipients is on).")],
        job_id: Annotated[str | None, Query(description="PMTA jobId; one of job_id / message_id is required.")] = None,
        message_id: Annotated[str | None, Query(description="Message-Id instead of job_id.")] = None,
        format: FormatParam = None,
    ) -> Any:
        rh = api.rcpt_key(rcpt)
        job = (job_id or "").strip()
        mid = norm_message_id(message_id or "")
        if not job and not mid:
            raise BadRequest(400, "job_id (or message_id) is required", "job_id")
        with api.connection() as conn:
            reader = api.reader(conn)
            items = reader.by_job_rcpt(job_hash(job), rh) if job else reader.by_message_rcpt(message_hash(mid), rh)
        if not items:
            raise BadRequest(404, "no timeline for this recipient", "job_id" if job else "message_id")
        if _want_text(request, format):
            return PlainTextResponse(render.timelines(f"job {job or '-'} rcpt {rcpt}", items))
        body = {"job_id": job or None, "message_id": mid or None, "rcpt": rcpt.strip().lower(), "timelines": items}
        return _json(TimelineResponse, body)

    @router.get("/timelines/{timeline_id}", response_model=TimelineResponse, responses={**errors, **_TEXT},
                summary="One timeline by the id a search returned")
    def get_timeline_by_id(
        request: Request,
        timeline_id: Annotated[int, Path(ge=1, le=MAX_ID, description="`id` from a search or timeline.")],
        format: FormatParam = None,
    ) -> Any:
        with api.connection() as conn:
            item = api.reader(conn).by_id(timeline_id)
        if item is None:
            raise BadRequest(404, f"no timeline {timeline_id}", "timeline_id")
        if _want_text(request, format):
            return PlainTextResponse(render.timeline(item))
        body = {"job_id": item["job_id"], "message_id": item["message_id"], "rcpt": item["rcpt"] or "",
                "timelines": [item]}
        return _json(TimelineResponse, body)

    @router.get("/search", response_model=SearchResponse, responses={**errors, **_TEXT},
                summary="Find timelines, newest first, paged with an opaque cursor")
    def search(
        request: Request,
        rcpt: Annotated[str | None, Query(description="Exact recipient address.")] = None,
        job_id: Annotated[str | None, Query(description="Exact jobId.")] = None,
        vmta: Annotated[str | None, Query(description="VirtualMTA of the latest attempt.")] = None,
        outcome: Annotated[Outcome | None, Query(description="Current outcome of the timeline.")] = None,
        since: Annotated[str | None, Query(description="first_seen >= this: epoch, ISO 8601 or e.g. `2h` ago.")] = None,
        until: Annotated[str | None, Query(description="first_seen < this (same forms).")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
        format: FormatParam = None,
    ) -> Any:
        now = api.clock()
        lo, hi = parse_time("since", since, now), parse_time("until", until, now)
        rh = api.rcpt_key(rcpt) if rcpt is not None else None
        jh = job_hash(job_id.strip()) if job_id else None
        fp = blake2b(json.dumps([rcpt, job_id, vmta, outcome, since, until]).encode(), digest_size=6).hexdigest()
        after = _cursor_decode(cursor, fp) if cursor else None
        code = store.OUTCOMES.index(outcome) if outcome else None
        with api.connection() as conn:
            items, nxt, limited = api.reader(conn).search(
                rcpt_h=rh, job_h=jh, vmta=vmta, outcome=code, since=lo, until=hi, limit=limit, after=after)
        page = {"items": items, "next_cursor": _cursor_encode(nxt, fp) if nxt else None, "limit": limit,
                "scan_limited": limited}
        if _want_text(request, format):
            return PlainTextResponse(render.search(page))
        return _json(SearchResponse, page)

    @router.get("/flows", response_model=FlowsResponse, responses={**errors, **_TEXT},
                summary="Sender domain -> VMTA -> ISP volumes for Grafana's Node graph panel")
    def flows(
        request: Request,
        since: Annotated[str, Query(description="Start (5-minute buckets): epoch, ISO 8601 or e.g. `1h` ago.")] = "1h",
        until: Annotated[str | None, Query(description="End (exclusive), same forms.")] = None,
        format: FormatParam = None,
    ) -> Any:
        now = api.clock()
        lo = parse_time("since", since, now)
        hi = parse_time("until", until, now)
        if lo is None:
            raise BadRequest(400, "since is required", "since")
        with api.connection() as conn:
            data = api.reader(conn).flows(lo, hi, api.max_flow_senders)
        body = {"since": iso(lo), "until": iso(hi), **data}
        if _want_text(request, format):
            return PlainTextResponse(render.flows(body))
        return _json(FlowsResponse, body)

    return router

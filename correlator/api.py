"""The /api/v1 routes: one FastAPI APIRouter the daemon mounts next to /metrics.

Routes are sync `def`, so FastAPI runs them in its threadpool and a slow query never blocks the
event loop; each request borrows a read connection from the pool and sees one snapshot.
Errors never escape as 500s: a route class turns validation failures and our own `BadRequest`
into `{"error", "parameter", "status"}` bodies (the router cannot install app-wide handlers).

Unauthenticated clients must not starve /metrics: at most `ApiLimits.max_concurrency` requests
run at once (others wait `queue_timeout`, then 503), and each request's SQLite work is interrupted
by a progress handler after `query_timeout` (503). Every input is bounded before it reaches SQLite
or datetime: times to 1970..9999, ids to int64, cursors (ours and the hub's) to bounded JSON read by one
decoder (`decode_token`). An empty query value is the same as an absent one, on every route.
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
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from correlator import render, store
from correlator.keys import RcptHasher, norm_message_id, norm_rcpt
from correlator.models import (
    ApiError,
    FlowsResponse,
    MessageResponse,
    Outcome,
    SearchResponse,
    TimelineResponse,
)
from correlator.store import ReadPool, StoreDamaged, StoreNotReady
from correlator.timeline import LAST_TIME, ClassOf, MessagePosition, Reader, flow_window, iso
from exporter.exposition import media_weights
from exporter.redact import REDACTED, key_without_addresses, key_without_recipient, redact
from exporter.timeparse import LATEST

log = logging.getLogger(__name__)

Format = Literal["json", "text"]
FormatParam = Annotated[
    Format | None, Query(description="`text` renders for a terminal (as does `Accept: text/plain`); default JSON.")
]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TEXT = {200: {"content": {"application/json": {}, "text/plain": {}}}}
MIN_TIME, MAX_TIME = 0.0, LAST_TIME  # 1970-01-01 .. 9999-12-31T23:59:59Z
MAX_ID = 2**63 - 1
MAX_CURSOR = 200
"""Longest daemon search cursor (characters): a flat [t0, id, fingerprint, now] is ~90."""
PROGRESS_STEPS = 20_000
"""SQLite VM steps between two looks at the clock (~1 ms of work)."""
deadline_clock: Callable[[], float] = time.monotonic
"""The clock request deadlines are measured on (module-level so a test can make work "take" time)."""


@dataclass(frozen=True)
class ApiLimits:
    """How much of the machine /api/v1 may take (from `web.api_*`; the listener puts it on app.state)."""

    max_concurrency: int = 2
    queue_timeout: float = 2.0
    query_timeout: float = 5.0


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("api_deadline", default=None)


class QueryBudgetExceeded(Exception):
    pass


def over_budget() -> bool:
    """True once the current request's deadline has passed (False outside a request)."""
    deadline = _DEADLINE.get()
    return deadline is not None and deadline_clock() >= deadline


def check_budget() -> None:
    """Stop Python work between SQLite statements at the request's deadline: the progress handler only
    sees SQLite's own steps, so loops over rows call this to be bounded by the same budget."""
    if over_budget():
        raise QueryBudgetExceeded()


class BadRequest(Exception):
    def __init__(self, status: int, error: str, parameter: str | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.parameter = status, error, parameter


def _error(status: int, error: str, parameter: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ApiError(error=error, parameter=parameter, status=status).model_dump(), status_code=status,
                        headers=headers)


STORE_LOG_INTERVAL = 60.0
"""Seconds before the same store error is logged again: a damaged store fails every request."""
log_clock: Callable[[], float] = time.monotonic
"""The clock of that interval (module-level so a test can move it)."""
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class LogOnce:
    """Logs each distinct message once per `interval`, then with how many answers repeated it meanwhile:
    one line a minute, not one per request (which buried the log of a damaged store)."""

    def __init__(self, interval: float, keep: int = 64) -> None:
        self.interval, self.keep = interval, keep
        self._seen: dict[str, list[float]] = {}  # message -> [when last logged, answers since]

    def __call__(self, level: int, message: str) -> None:
        now = log_clock()
        seen = self._seen.get(message)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return
        more = f" ({seen[1]:.0f} more answers since)" if seen and seen[1] else ""
        if seen is None and len(self._seen) >= self.keep:
            self._seen.pop(next(iter(self._seen)))
        self._seen[message] = [now, 0]
        log.log(level, "%s%s", message, more)


_store_log = LogOnce(STORE_LOG_INTERVAL)


def _store_error(exc: sqlite3.Error) -> JSONResponse:
    """A 503 whose one line says what is wrong with the store (logged as said, never with a traceback):
    damage names the file and the runbook, since no retry helps; busy or locked is worth a retry."""
    if isinstance(exc, StoreDamaged):
        message, level = f"correlator store damaged: {exc}; see docs/runbooks.md", logging.ERROR
    elif getattr(exc, "sqlite_errorcode", None) in _BUSY:
        message, level = f"correlator store busy: {exc}", logging.WARNING
    else:
        message, level = f"correlator store failed: {exc}", logging.ERROR
    _store_log(level, message)
    return _error(503, message)


class ErrorRoute(APIRoute):
    """Maps every failure of our routes to an ApiError JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            limits: ApiLimits = getattr(request.app.state, "api_limits", None) or ApiLimits()
            slots = getattr(request.app.state, "api_slots", None)
            if slots is None:
                slots = request.app.state.api_slots = asyncio.Semaphore(limits.max_concurrency)
            if not await _take_slot(slots, limits.queue_timeout):
                return _error(503, "too many concurrent API requests; retry later", None,
                              {"Retry-After": str(max(1, math.ceil(limits.queue_timeout)))})
            token = _DEADLINE.set(deadline_clock() + limits.query_timeout)
            try:
                return await handler(_without_blank_values(request))
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
            except sqlite3.Error as exc:
                return _store_error(exc)
            finally:
                _DEADLINE.reset(token)
                slots.release()

        return wrapped


async def _take_slot(slots: asyncio.Semaphore, queue_timeout: float) -> bool:
    """One of the /api/v1 slots, waiting for it up to `queue_timeout` seconds; False when none came in time.

    0 (`web.api_queue_timeout: 0`, "no wait") takes a free slot now or none: `asyncio.wait_for(acquire, 0)` cancels
    the acquire before it runs (Python 3.11), so every request was a 503 with every slot free."""
    if queue_timeout <= 0:
        if slots.locked():
            return False
        await slots.acquire()  # a free slot: taken at once, without suspending
        return True
    try:
        await asyncio.wait_for(slots.acquire(), timeout=queue_timeout)
    except TimeoutError:
        return False
    return True


def _without_blank_values(request: Request) -> Request:
    """The request with empty (or all-blank) query values dropped: `vmta=` is the same as no `vmta`, on
    every route of the daemon and the hub alike (Grafana sends empty variables; a required parameter
    left empty is then a missing one, 400 naming it)."""
    raw = request.scope.get("query_string", b"")
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if v.strip()]
    if len(kept) == len(pairs):
        return request
    scope = {**request.scope, "query_string": urlencode(kept).encode("latin-1")}
    return Request(scope, request.receive)


ECHO_CHARS = 64
"""Most characters of a caller's value an error message repeats: an answer's size stays bounded by ours."""


def echoed(value: str) -> str:
    """`value` as an error message quotes it, cut to ECHO_CHARS (a 15,000-character Message-Id came back whole)."""
    return repr(value[:ECHO_CHARS]) + ("..." if len(value) > ECHO_CHARS else "")


_SPACE = re.compile(r"\s")
_REDACT_CHARS = 16 * ECHO_CHARS
"""Characters of a domain redacted before its echo is cut to ECHO_CHARS: an address cut past them is never shown."""


def unquoted_space(address: str) -> bool:
    """True for `bob tag@gmail.com`: no address has a space outside a quoted local part (`"bob tag"@x`), so one
    is a `+` sent unencoded in a query string (URL form encoding reads `+` as a space). Needs an `@`."""
    local, at, domain = address.rpartition("@")
    if not at:
        return False
    quoted = len(local) >= 2 and local[0] == local[-1] == '"'
    return _SPACE.search(domain) is not None or (not quoted and _SPACE.search(local) is not None)


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
        raise BadRequest(400, f"invalid time {echoed(value)}: use epoch seconds, ISO 8601 or e.g. 15m, 7d",
                         name) from None
    if not MIN_TIME <= ts <= MAX_TIME:  # also false for nan
        raise BadRequest(400, f"time {echoed(value)} is out of range (1970-01-01 .. 9999-12-31)", name)
    return ts


def json_answer(model: type[BaseModel], body: dict[str, Any]) -> Response:
    """Validate and encode with the response model here, in the worker thread: for a returned dict
    FastAPI would encode on the event loop, where every millisecond delays /metrics."""
    return Response(model.model_validate(body).model_dump_json(), media_type="application/json")


def want_text(request: Request, fmt: str | None) -> bool:
    """`format` decides; else `Accept` by weight (RFC 9110: `text/plain;q=0` refuses text, `application/json;q=0.1,
    text/plain` prefers it); JSON on a tie, as with no header or `*/*`. The daemon's and the hub's routes."""
    if fmt is not None:
        return fmt == "text"
    text, json_ = media_weights(request.headers.get("accept", ""), "text/plain", "application/json")
    return text > json_


def _decimal(value: Any) -> Any:
    """A path or query integer is ASCII digits: pydantic's lax int also reads `1_0` (timeline 10), `+10`, `10.0`
    and ` 10`, which docs/api.md calls no integer (a 400)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("int_parsing", "Input should be an integer: decimal digits only")
    return value


DIGITS = BeforeValidator(_decimal)
"""Every integer parameter of the daemon's and the hub's routes: `Annotated[int, Query(...), DIGITS]` (after the
Query or Path: placed before it, its bounds leave the OpenAPI schema's minimum/maximum for keys no client knows)."""


def encode_token(value: Any) -> str:
    """Compact JSON in unpadded URL-safe base64: the form of every cursor (daemon and hub)."""
    raw = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _json_depth(raw: bytes) -> int:
    """Deepest [ / { nesting of a JSON text, brackets inside strings ignored; read in one linear pass
    before json.loads, whose recursion on a crafted `[[[[...` would otherwise end in RecursionError."""
    depth = peak = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                in_string = False
        elif ch == 0x22:
            in_string = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            peak = max(peak, depth)
        elif ch in (0x5D, 0x7D):
            depth -= 1
    return peak


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def decode_token(token: str, *, max_chars: int, max_depth: int, parameter: str = "cursor") -> Any:
    """The JSON value of a client-supplied token, or a 400 naming `parameter`: the one decoder of cursors,
    bounded in length and nesting before any parsing, so no input can reach a 500."""
    try:
        if len(token) > max_chars:
            raise ValueError("too long")
        body = token.rstrip("=")
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        if _json_depth(raw) > max_depth:
            raise ValueError("too deep")
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (binascii.Error, ValueError, TypeError, UnicodeError, OverflowError, RecursionError):
        raise BadRequest(400, "malformed cursor", parameter) from None


def _number(value: Any) -> float:
    """A JSON number in 1970..9999 as seconds, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    ts = float(value)
    if not (math.isfinite(ts) and MIN_TIME <= ts < LATEST):  # any record time the parser accepts (its last second too)
        raise ValueError("out of range")
    return ts


def _cursor_encode(pos: tuple[float, int], fingerprint: str, now: float) -> str:
    """Position plus the first page's clock: later pages resolve `since=2h` against the same instant."""
    return encode_token([pos[0], pos[1], fingerprint, now])


def _cursor_decode(cursor: str, fingerprint: str, mismatch: str = "cursor belongs to a search with other filters",
                   ) -> tuple[tuple[float, int], float | None]:
    """((t0, id), first page's now) from a cursor; a 400 on anything but [number, int, str(, number)].

    A 3-element cursor (before the clock was carried) still pages, from the current clock."""
    value = decode_token(cursor, max_chars=MAX_CURSOR, max_depth=1)
    try:
        if not isinstance(value, list) or len(value) not in (3, 4):
            raise ValueError("shape")
        t0, tl, fp = value[:3]
        if not isinstance(tl, int) or isinstance(tl, bool) or not 0 <= tl <= MAX_ID or not isinstance(fp, str):
            raise ValueError("types")
        pos = (_number(t0), tl)
        now = _number(value[3]) if len(value) == 4 else None
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(400, "malformed cursor", "cursor") from None
    if fp != fingerprint:
        raise BadRequest(400, mismatch, "cursor")
    return pos, now


def _message_cursor_decode(cursor: str, fingerprint: str) -> MessagePosition:
    """Where a messages cursor continues: [id, fingerprint] (a message paged in the order stored), or [total, day
    slice, recipient key or null, id, fingerprint] (a large one paged along its index: `Reader.message_page`). A
    cursor of the earlier form [first_seen, id, fingerprint] continues after its id."""
    value = decode_token(cursor, max_chars=MAX_CURSOR, max_depth=1)
    try:
        if not isinstance(value, list) or len(value) not in (2, 3, 5):
            raise ValueError("shape")
        fp = value[-1]
        if not isinstance(fp, str):
            raise ValueError("types")
        if len(value) == 5:
            total, day, rcpt_h, tl = value[:4]
            if not all(_int64(v) for v in (total, day, tl)) or not (rcpt_h is None or _int64(rcpt_h)) \
                    or not 0 <= tl <= MAX_ID or total < 0:
                raise ValueError("types")
            position: MessagePosition = (total, day, rcpt_h, tl)
        else:
            if len(value) == 3:
                _number(value[0])
            tl = value[-2]
            if not isinstance(tl, int) or isinstance(tl, bool) or not 0 <= tl <= MAX_ID:
                raise ValueError("types")
            position = tl
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(400, "malformed cursor", "cursor") from None
    if fp != fingerprint:
        raise BadRequest(400, "cursor belongs to another Message-Id", "cursor")
    return position


def _int64(value: Any) -> bool:
    """A JSON integer SQLite can bind (no bool, no float)."""
    return type(value) is int and -(1 << 63) <= value < 1 << 63


def _message_cursor_encode(position: MessagePosition, fingerprint: str) -> str:
    return encode_token([*position, fingerprint] if isinstance(position, tuple) else [position, fingerprint])


def _message_fingerprint(mid: str, hasher: RcptHasher) -> str:
    """Ties a messages cursor to its Message-Id: another message's cursor is a 400, not a wrong page. Keyed with
    hash_recipients: a Message-Id that embeds the recipient was given back to a list of candidates."""
    return hasher.keyed_digest(json.dumps(["message", mid]).encode(), 6)


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
        return Reader(conn, self.class_of, self.hasher.hashed, check=check_budget)

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection whose queries stop at the request's deadline (QueryBudgetExceeded).

        Every route reads through this, never `pool.connection()`, so `web.api_query_timeout` bounds them all."""
        if _DEADLINE.get() is None:
            with self.pool.connection() as conn:
                yield conn
            return
        check_budget()  # a request whose budget is already spent does no work
        with self.pool.connection() as conn:
            fired = []

            def interrupt() -> int:
                if over_budget():
                    fired.append(True)
                    return 1
                return 0

            conn.set_progress_handler(interrupt, PROGRESS_STEPS)
            try:
                yield conn
            except sqlite3.OperationalError:
                if fired:
                    raise QueryBudgetExceeded() from None
                raise
            finally:
                conn.set_progress_handler(None, 0)

    def rcpt_key(self, rcpt: str, name: str = "rcpt") -> int:
        """The recipient's index key; a 400 naming `name` for a value no address has (empty, or with a space that
        was a `+`: looked up, it answered 404 on job_id or an empty search, with no word about the `+`)."""
        value = norm_rcpt(rcpt)
        if not value:
            raise BadRequest(400, "empty recipient", name)
        if unquoted_space(value):
            raise BadRequest(400, f"recipient {self.rcpt_echo(value)} has a space: a `+` in a query string reads as "
                             f"a space, send it as %2B (curl -G --data-urlencode '{name}=...')", name)
        shown = self.hasher.shown_key(value)  # a hashed recipient as a page showed it
        return shown if shown is not None else self.hasher(value)[0]

    def rcpt_shown(self, rcpt: str) -> str:
        """The recipient as an answer may show it: with hash_recipients, `hmac-sha256:<hex>` (an answer must
        not carry the address a caller sent: proxies and Grafana keep answers); plain otherwise."""
        value = norm_rcpt(rcpt)
        if not self.hasher.hashed or self.hasher.shown_key(value) is not None:
            return value
        return self.hasher(value)[1]

    def key_shown(self, key: str, rcpt: str, kind: Literal["job_id", "message_id"]) -> str:
        """A jobId or Message-Id the caller sent, as an answer about `rcpt` may echo it: with hash_recipients, as
        the store keeps it (exporter.redact.key_without_recipient: the recipient's address as `<rcpt>`, other
        addresses' local parts as `[redacted]`), so that no answer shows an address beside a hash (review
        2026-12-07: `{"job_id": "dave@x.com-J3", "rcpt": "hmac-..."}`)."""
        if not key or not self.hasher.hashed:
            return key
        value = norm_rcpt(rcpt)
        if value and self.hasher.shown_key(value) is None:
            return key_without_recipient(key, value, kind)
        return key_without_addresses(key, kind)

    def message_id_shown(self, mid: str, items: list[dict[str, Any]]) -> str:
        """The Message-Id a caller sent, as an answer listing its recipients' timelines may echo it: with
        hash_recipients, as a timeline of it stores it when that lost its recipient's address (its own `<rcpt>`),
        else without the addresses before its own `@`, so that no address is shown above a hash; the caller's
        text otherwise."""
        if not self.hasher.hashed:
            return mid
        for item in items:
            stored = item.get("message_id")
            if stored and "<rcpt>" in stored:
                return str(stored)
        return key_without_addresses(mid, "message_id")

    def rcpt_echo(self, rcpt: str) -> str:
        """The recipient as an error message quotes it, so the operator sees what was looked up (`bob tag@...`),
        cut by `echoed`. With hash_recipients the local part is redacted whole and the domain kept: an error body
        is kept like any answer, and `redact` alone keeps what precedes a space (`bob [redacted]@gmail.com`)."""
        value = norm_rcpt(rcpt)
        if not self.hasher.hashed or self.hasher.shown_key(value) is not None:
            return echoed(value)
        _local, at, domain = value.rpartition("@")
        return echoed(redact(f"{REDACTED}@{domain[:_REDACT_CHARS]}") if at else REDACTED)


_KEY_INDEX = {"job_h": "corr_tl_job", "mid_h": "corr_tl_mid"}


def key_stored(conn: sqlite3.Connection, column: Literal["job_h", "mid_h"], key: int) -> bool:
    """Whether any timeline of this job (or Message-Id) is stored, so that a 404 names the parameter at fault
    (`rcpt` when the job is there). One seek per day slice along the index the recipient's lookup just read, never
    a search index (a store without history drops those)."""
    sql = f"SELECT 1 FROM corr_timelines INDEXED BY {_KEY_INDEX[column]} WHERE {store.DAYS} AND {column} = ? LIMIT 1"
    return conn.execute(sql, (key,)).fetchone() is not None


def path_segment(value: str) -> str:
    """`value` as one segment of an /api/v1 path (a Message-Id): '/' and everything but '@' percent-encoded, and
    a value of dots only ('.', '..') encoded too, or a client (httpx, a browser) resolves it as a relative path."""
    seg = quote(value, safe="@")
    return seg.replace(".", "%2E") if seg.strip(".") == "" else seg


def redirect_double_slash(router: APIRouter) -> None:
    """Answer `//api/v1/...` with a 308 to `/api/v1/...` (daemon and hub alike): Grafana's Infinity data
    source joins a base URL ending in `/` and a query URL starting with `/`."""

    @router.get("//api/v1/{rest:path}", include_in_schema=False)
    def double_slash(rest: str, request: Request) -> RedirectResponse:
        # The path as the client encoded it (`rest` is decoded: a Message-Id's `%3F`, `%23` or `%25` would come
        # back as a query, a fragment or another character); only the leading slashes are collapsed.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = "/" + raw.decode("latin-1").lstrip("/")
        if not path.startswith("/api/v1/"):  # a slash the client encoded (`/%2Fapi/...`): redirected, it looped
            raise StarletteHTTPException(404)
        query = request.url.query
        return RedirectResponse(path + ("?" + query if query else ""), status_code=308)


def build_router(api: Api) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["correlator"], route_class=ErrorRoute)
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ApiError, "description": "Bad parameter (named in `parameter`)."},
        404: {"model": ApiError, "description": "Nothing stored for this key."},
        503: {"model": ApiError, "description": "Store not ready, busy or damaged, too many concurrent API requests, "
              "or the query exceeded its time budget."},
        # Declaring `default` also stops FastAPI from listing a 422 the server never sends.
        "default": {"model": ApiError, "description": "Any other error (401, 405): same body."},
    }

    @router.get("/messages/{message_id:path}", response_model=MessageResponse, responses={**errors, **_TEXT},
                summary="Every recipient's timeline of one Message-Id")
    def get_message(
        request: Request,
        message_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most recipients returned."), DIGITS] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
        format: FormatParam = None,
    ) -> Any:
        mid = norm_message_id(message_id)
        if not mid:
            raise BadRequest(400, "empty Message-Id", "message_id")
        fp = _message_fingerprint(mid, api.hasher)
        after = _message_cursor_decode(cursor, fp) if cursor else None
        with api.connection() as conn:
            # the store's scheme (keys.LinkKeys: keyed with hash_recipients)
            items, total, nxt = api.reader(conn).message_page(api.hasher.links.message_hash(mid), limit, after)
        if not items and not total:
            raise BadRequest(404, f"no timeline for Message-Id {echoed(api.key_shown(mid, '', 'message_id'))}",
                             "message_id")
        next_cursor = _message_cursor_encode(nxt, fp) if nxt is not None else None
        shown = api.message_id_shown(mid, items)
        body = {"message_id": shown, "recipients_total": total, "truncated": total > len(items),
                "next_cursor": next_cursor, "recipients": items}
        if want_text(request, format):
            return PlainTextResponse(render.timelines(f"Message-Id <{shown}>", items,
                                                      render.message_note(len(items), total, next_cursor)))
        return json_answer(MessageResponse, body)

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
            links = api.hasher.links  # the store's scheme (keys.LinkKeys)
            key_h = links.job_hash(job) if job else links.message_hash(mid)
            items, older = reader.by_job_rcpt(key_h, rh) if job else reader.by_message_rcpt(key_h, rh)
            known = bool(items) or key_stored(conn, "job_h" if job else "mid_h", key_h)
        if not items:
            key = (f"job {echoed(api.key_shown(job, rcpt, 'job_id'))}" if job
                   else f"Message-Id {echoed(api.key_shown(mid, rcpt, 'message_id'))}")
            if not known:
                raise BadRequest(404, f"no timeline for {key}", "job_id" if job else "message_id")
            raise BadRequest(404, f"no timeline for recipient {api.rcpt_echo(rcpt)} {'in' if job else 'of'} {key}",
                             "rcpt")
        if want_text(request, format):
            note = f"{older} older sends not listed" if older else ""
            title = render.lookup_title(api.key_shown(job, rcpt, "job_id"), api.key_shown(mid, rcpt, "message_id"),
                                        api.rcpt_shown(rcpt))
            return PlainTextResponse(render.timelines(title, items, note))
        body = {"job_id": api.key_shown(job, rcpt, "job_id") or None,
                "message_id": api.key_shown(mid, rcpt, "message_id") or None,
                "rcpt": api.rcpt_shown(rcpt), "timelines": items,
                "timelines_omitted": older}
        return json_answer(TimelineResponse, body)

    @router.get("/timelines/{timeline_id}", response_model=TimelineResponse, responses={**errors, **_TEXT},
                summary="One timeline by the id a search returned")
    def get_timeline_by_id(
        request: Request,
        timeline_id: Annotated[int, Path(ge=1, le=MAX_ID, description="`id` from a search or timeline."), DIGITS],
        format: FormatParam = None,
    ) -> Any:
        with api.connection() as conn:
            item = api.reader(conn).by_id(timeline_id)
        if item is None:
            raise BadRequest(404, f"no timeline {timeline_id}", "timeline_id")
        if want_text(request, format):
            return PlainTextResponse(render.timeline(item))
        body = {"job_id": item["job_id"], "message_id": item["message_id"], "rcpt": item["rcpt"] or "",
                "timelines": [item]}
        return json_answer(TimelineResponse, body)

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
        limit: Annotated[int, Query(ge=1, le=500), DIGITS] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
        format: FormatParam = None,
    ) -> Any:
        rh = api.rcpt_key(rcpt) if rcpt is not None else None
        jh = api.hasher.links.job_hash(job_id.strip()) if job_id else None
        vmta = vmta.strip() if vmta else None  # as job_id: a pasted space is no part of a VMTA's name
        # Of the recipient's key, not its text: a cursor is kept with its answer, and a digest of the address
        # alone gave the address back to a dictionary of candidates (with hash_recipients, the key needs the HMAC's).
        fp = api.hasher.keyed_digest(json.dumps([rh, jh, vmta, outcome, since, until]).encode(), 6)
        after, first_now = _cursor_decode(cursor, fp) if cursor else (None, None)
        now = api.clock() if first_now is None else first_now  # relative times: the first page's bounds
        lo, hi = parse_time("since", since, now), parse_time("until", until, now)
        code = store.OUTCOMES.index(outcome) if outcome else None
        with api.connection() as conn:
            items, nxt, limited = api.reader(conn).search(
                rcpt_h=rh, job_h=jh, vmta=vmta, outcome=code, since=lo, until=hi, limit=limit, after=after)
        page = {"items": items, "next_cursor": _cursor_encode(nxt, fp, now) if nxt else None, "limit": limit,
                "scan_limited": limited}
        if want_text(request, format):
            return PlainTextResponse(render.search(page))
        return json_answer(SearchResponse, page)

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
        # As /replies, on the bounds as given (checked after rounding to buckets, `until` before `since` within one
        # bucket, 11:21:07 to 11:20:08, read that bucket: a 200 with its data). Rounded, since < until still holds:
        # since rounds down, until up, and parse_time keeps both at most LAST_TIME, where rounding stops.
        if hi is not None and lo >= hi:
            raise BadRequest(400, "since must be before until", "since")
        lo, hi = flow_window(lo, hi)  # the bounds of the 5-minute buckets read, echoed as such
        with api.connection() as conn:
            data = api.reader(conn).flows(lo, hi, api.max_flow_senders)
        body = {"since": iso(lo), "until": iso(hi), **data}
        if want_text(request, format):
            return PlainTextResponse(render.flows(body))
        return json_answer(FlowsResponse, body)

    return router

"""Concurrent GETs to every daemon, each bounded by the per-host timeout, never raising.

A host that refuses, times out, answers 5xx or garbage becomes a `HostAnswer` with `error` set:
the merge layer turns those into a partial answer naming the host. The bound is enforced with
`asyncio.wait_for` around the whole request, since httpx's timeouts apply per read and a server that
drips bytes could otherwise hold a request far longer. The body is streamed and capped at
`hub.max_answer_size` counted unzipped (a few KiB of gzip unzip to GiBs). Decoding a body already read
cannot be interrupted: a big one is decoded on a decode thread of its own (DECODE_THREADS), whose JSON
parse still holds the interpreter lock; near the cap a host's answer can end ~0.5 s past its budget.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import httpcore
import httpx
from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator

from correlator.api import MAX_ID, MAX_TIME, MIN_TIME
from correlator.models import ApiError, FlowsResponse, MessageResponse, SearchResponse, TimelineResponse
from correlator.replies import LookupResponse, RepliesResponse
from correlator.timeline import MAX_TIMELINES, events_per_timeline
from exporter.boundedfile import read_password, read_secret, secret_text
from exporter.classify.isp import ISP_NAMES
from exporter.httpbody import ACCEPT_ENCODING, BodyProblem, read_capped
from exporter.preflight import no_passphrase
from exporter.redact import redact_log_text
from exporter.textrepair import TooDeep, first_surrogate_path
from hub.config import HUB_API_CONCURRENCY, MAX_ANSWER_SIZE, HubSection
from hub.encode import item_lists as _item_lists
from hub.resolver import Resolver, ResolvingBackend
from hub.targets import Target
from hub.threads import Threads

log = logging.getLogger(__name__)

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
    away: bool = False
    """Not asked: its place in a cursor belongs to a host no longer among the targets."""
    stuck: bool = False
    """Answered, but its next_cursor is the one it was asked with: named in missing_hosts, yet it did answer."""
    cut: bool = False
    """Timed out within what was left of the request's budget, shorter than the host's own `hub.timeout`."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def refused(self) -> None:
        """Turn this host's own error answer (a 400 beside hosts that took the same parameters, a status the route
        never answers) into a missing host, saying what it answered."""
        body = self.body if isinstance(self.body, dict) else {}
        parameter = body.get("parameter")
        self.error = (f"HTTP {self.status}: {_short(str(body.get('error')))}"
                      + (f" (parameter {_short(str(parameter))})" if parameter else ""))


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
    """A secret file as hub.preflight checked it at start (a regular file of at most 16 KiB): one swapped for
    /dev/zero or a FIFO before a SIGHUP never eats the hub's memory or hangs it (OSError, as an unreadable file)."""
    return secret_text(read_secret(Path(path))).strip()


class PerHostPools(httpx.AsyncBaseTransport):
    """A connection pool per daemon (per target URL) instead of one for all: a host that hangs holds connections of
    its own pool only, so waiting for a connection never eats a healthy host's time budget. A hub request holds at
    most one connection per host at a time, so `per_host` (web.api_max_concurrency) connections never make one wait.
    Pools of hosts left unasked for IDLE_POOL seconds (gone from the targets) are closed. Host names are resolved
    by the hub's own `Resolver` (hub.resolver), shared by the pools: never in asyncio's default executor, where one
    name whose DNS hangs made every other name's lookup wait."""

    def __init__(self, verify: ssl.SSLContext | bool, per_host: int, clock: Callable[[], float] = time.monotonic,
                 resolver: Resolver | None = None) -> None:
        self.verify, self.per_host, self.clock = verify, per_host, clock
        self.backend = ResolvingBackend(resolver if resolver is not None else Resolver())
        self._pools: dict[str, httpx.AsyncHTTPTransport] = {}
        self._used: dict[str, float] = {}
        self._swept = clock()

    def pool(self, key: str) -> httpx.AsyncHTTPTransport:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._transport()
        self._used[key] = self.clock()
        return pool

    def _transport(self) -> httpx.AsyncHTTPTransport:
        """httpx's transport (its request conversion and its mapping of httpcore's errors kept) over an httpcore pool
        built here with the public `network_backend` argument, which httpx does not pass on. The one private name
        used is the transport's `_pool` (httpx since 0.18), checked: should a release keep its pool elsewhere, the
        hub fails at its first request rather than silently resolving in the default executor again."""
        limits = httpx.Limits(max_connections=self.per_host, max_keepalive_connections=KEEPALIVE_PER_HOST)
        transport = httpx.AsyncHTTPTransport(verify=self.verify, trust_env=False, limits=limits)
        if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport keeps no httpcore pool in _pool: see hub.fanout.PerHostPools")
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=self.verify, trust_env=False),
            max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=self.backend)
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._sweep()
        key = request.extensions.get(POOL_KEY) or f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
        return await self.pool(key).handle_async_request(request)

    async def _sweep(self) -> None:
        """Close the pools of hosts not asked for IDLE_POOL (checked at most that often); a request still running
        on one (hub.timeout longer than that) just ends as that host missing."""
        now = self.clock()
        if now - self._swept < IDLE_POOL:
            return
        self._swept = now
        for key in [k for k, used in self._used.items() if now - used >= IDLE_POOL]:
            del self._used[key]
            await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        pools, self._pools, self._used = list(self._pools.values()), {}, {}
        for pool in pools:
            await pool.aclose()


CUT = 0.95
"""A request whose budget the caller's deadline made shorter than this share of hub.timeout was cut (HostAnswer.cut)."""
POOL_KEY = "watchtower_pool"
"""Request extension naming the pool (the target's URL) a request goes through."""
KEEPALIVE_PER_HOST = 2
"""Idle connections kept per host: a burst opens more, then closes them (two sockets per host stay open)."""
IDLE_POOL = 600.0


def make_client(section: HubSection, per_host: int = HUB_API_CONCURRENCY) -> httpx.AsyncClient:
    """One client for all daemons, a connection pool per daemon, with the configured auth and TLS (secrets read
    from files)."""
    headers = {"accept": "application/json", "accept-encoding": ACCEPT_ENCODING, "user-agent": "watchtower-hub"}
    auth: httpx.Auth | None = None
    if section.auth.bearer_token_file:
        headers["authorization"] = "Bearer " + _read_secret(section.auth.bearer_token_file)
    elif section.auth.username and section.auth.password_file:
        auth = httpx.BasicAuth(section.auth.username, read_password(section.auth.password_file))
    t = section.timeout
    return httpx.AsyncClient(
        headers=headers, auth=auth, timeout=httpx.Timeout(t, connect=t), follow_redirects=False, trust_env=False,
        transport=PerHostPools(_verify(section), per_host))


ERROR_TEXT_BYTES = 4096
"""Of an answer that is no daemon's (a proxy's error page), only its start is read: 200 characters are shown."""
DECODE_INLINE = 1024**2
"""Bodies up to this size are decoded on the event loop; bigger ones in a thread."""

DAEMON_ANSWERS = frozenset({200, 400, 404})
"""The statuses a daemon answers a query with (found, a bad parameter, nothing stored); any other means the host
could not be asked, and the hub says so (missing_hosts), never that it found nothing."""


NO_API = "HTTP 404: no /api/v1 on this host (its correlator is off, or it is an older version)"


def not_a_daemons_404(status: int, body: Any) -> bool:
    """A daemon's 404 ("nothing stored for this key") names the parameter it looked up; a listener without the
    route (correlator off: exporter/http.py's "no route"), or a proxy's 404, does not. That host was not asked:
    counted as holding nothing, it made a "not found" look complete."""
    return status == 404 and not (isinstance(body, dict) and isinstance(body.get("parameter"), str)
                                  and body["parameter"])


PRIVATE_PARAMS = frozenset({"rcpt", "job_id", "message_id"})
"""Parameters that may hold an address (a job id or a Message-Id can): sent to a daemon in a form body, never in its
URL (docs/api.md, "Addresses out of URLs")."""


class Fanout:
    """GET one path on many targets at once."""

    def __init__(self, client: httpx.AsyncClient, timeout: float, max_answer: int = MAX_ANSWER_SIZE) -> None:
        self.client = client
        self.timeout = timeout
        self.max_answer = max_answer

    async def one(self, target: Target, path: str, params: dict[str, Any], deadline: float | None = None) -> HostAnswer:
        budget = self.timeout if deadline is None else max(0.0, min(self.timeout, deadline - time.monotonic()))
        start = time.monotonic()
        ans = HostAnswer(target)
        try:  # reading, unzipping and decoding the answer are all within the host's budget
            await asyncio.wait_for(self._ask(ans, path, params), budget)
        except TimeoutError:
            ans.error, ans.body = f"timed out after {budget:.3g}s", None
            ans.cut = budget < CUT * self.timeout  # (a deadline set at now + timeout is no cut)
        except Exception as exc:  # noqa: BLE001 - whatever one host's request raises (httpx.InvalidURL, an
            # OverflowError from connect() for a port past 65535, in anyio's ExceptionGroup) is that host missing:
            # the other hosts' answers go on, never a 500 for the whole request
            ans.error, ans.body = _why(exc), None
            if not isinstance(exc, httpx.HTTPError | httpx.InvalidURL):
                log.debug("asking %s failed", ans.target.url, exc_info=True)
        ans.seconds = time.monotonic() - start
        return ans

    async def _ask(self, ans: HostAnswer, path: str, params: dict[str, Any]) -> None:
        """Fill `ans` from one GET; the body is streamed and capped, never read whole first. A lookup by address
        (`PRIVATE_PARAMS`) is POSTed as a form, which a daemon answers as its GET (exporter.formquery): the address
        stays out of the request line a reverse proxy in front of the daemon logs."""
        query = {"params": params} if PRIVATE_PARAMS.isdisjoint(params) else {"data": params}
        request = self.client.build_request("GET" if "params" in query else "POST", ans.target.url + path, **query,
                                            extensions={POOL_KEY: ans.target.url})
        resp = await self.client.send(request, stream=True)
        try:
            ans.status = resp.status_code
            if resp.status_code not in DAEMON_ANSWERS:  # 429 (its auth check busy), 401, 5xx...: not asked
                text = (await read_capped(resp, ERROR_TEXT_BYTES, cut=True)).decode("utf-8", "replace")
                ans.error = f"HTTP {resp.status_code}: {_short(text)}"
                return
            raw = await read_capped(resp, self.max_answer)
        except BodyProblem as exc:
            ans.error = f"HTTP {resp.status_code}: {exc}"
            return
        finally:
            await resp.aclose()
        ans.body, ans.error = await _decoded(raw, path, resp.status_code, _asked_limit(path, params))
        if ans.error is None and not_a_daemons_404(resp.status_code, ans.body):
            ans.body, ans.error = None, NO_API

    async def aclose(self) -> None:
        await self.client.aclose()

    async def all(
        self, targets: list[Target], path: str, params: dict[str, Any], deadline: float | None = None
    ) -> list[HostAnswer]:
        return list(await asyncio.gather(*(self.one(t, path, params, deadline) for t in targets)))


DECODE_THREADS = 2
"""Threads decoding big answers: their own pool, so decodes a timeout abandoned (they run to their end) queue
there, not in asyncio's default executor nor among the hub's lookups (hub.resolver) or other work (hub.threads)."""
DECODERS = Threads(DECODE_THREADS, "hub-decode")
"""The decode threads, made on the first big answer."""


ASKED_LISTS: dict[type[BaseModel], tuple[str, int]] = {
    SearchResponse: ("items", 50), MessageResponse: ("recipients", 100), LookupResponse: ("timelines", 100),
    RepliesResponse: ("replies", 10)}
"""The list of a route asked with `limit`, and the daemon's default `limit`: a daemon never lists more than asked."""


def _asked_limit(path: str, params: dict[str, Any]) -> int | None:
    """The `limit` a request asked for (the daemon's default when it asked none), or None on a route whose list it
    does not bound."""
    model = answer_model(path)
    listed = ASKED_LISTS.get(model) if model is not None else None
    if listed is None:
        return None
    try:
        return int(params["limit"])
    except (KeyError, TypeError, ValueError):
        return listed[1]


async def _decoded(raw: bytes | bytearray, path: str, status: int, limit: int | None = None,
                   ) -> tuple[Any, str | None]:
    """(body, None) or (None, why not): JSON, checked against the daemon's model of that route. A big body is
    decoded on a decode thread (the event loop goes on between the parse's lock releases)."""
    if len(raw) > DECODE_INLINE:
        return await DECODERS.run(_decode, raw, path, status, limit)
    return _decode(raw, path, status, limit)


def _fail_fast_schema(schema: Any, field: str | None = None) -> Any:
    """A copy of a core schema that checks the same shape, its lists stopping at their first bad item, and its
    models checked as plain fields (a validator built from a schema naming a model class reuses that class's own,
    which collects every item's errors). Each number is held to what a daemon sends (`_number_bounds`); `field` is
    the name of the model field the schema is of."""
    if isinstance(schema, dict):
        ref = None
        while schema.get("type") == "model":
            ref, schema = schema.get("ref", ref), schema["schema"]
        if schema.get("type") == "model-fields":
            out = {k: (_fail_fast_schema(v) if k != "fields" else
                       {name: _fail_fast_schema(f, name) for name, f in v.items()}) for k, v in schema.items()}
        else:
            out = {k: _fail_fast_schema(v, field) for k, v in schema.items()}
        if ref is not None:
            out["ref"] = ref
        if out.get("type") in ("list", "set", "frozenset", "tuple"):
            out["fail_fast"] = True
        out.update(_number_bounds(out.get("type"), field))
        return out
    if isinstance(schema, list):
        return [_fail_fast_schema(v, field) for v in schema]
    return schema


def _number_bounds(kind: Any, field: str | None) -> dict[str, Any]:
    """The bounds of a number a daemon sends: every integer a count or an id from 0 (a count to 2^53, an id to
    2^63 - 1), every float finite, a time (`ts`) within the API's times (1970 .. 9999). The hub sums, divides and
    takes roots of counts, and the pages make Grafana links of times: a 10**400 or a 1e308 made 500s."""
    if kind == "int":
        return {"ge": 0, "le": MAX_ID if field == "id" else MAX_COUNT}
    if kind == "float":
        return {"allow_inf_nan": False, **({"ge": MIN_TIME, "le": MAX_TIME} if field in TIME_FIELDS else {})}
    return {}


TIME_FIELDS = frozenset({"ts"})
"""Float fields that are times (epoch seconds)."""


@functools.cache
def _checker(model: type[BaseModel]) -> SchemaValidator:
    """`model`'s check that stops at the first bad item of any list: 150,000 empty items in a few hundred bytes of
    gzip made pydantic collect ~20 errors each (3 million, GBs, ~10 s of the event loop). Should a pydantic release
    shape its core schemas otherwise, the model's own check serves (every error, as before; the limit check of the
    paged routes still bounds their lists)."""
    try:
        return SchemaValidator(_fail_fast_schema(model.__pydantic_core_schema__))
    except Exception:  # noqa: BLE001 - a schema shape this copy does not know
        log.warning("hub: the fail-fast check of %s could not be built; using the model's own", model.__name__)
        return model.__pydantic_validator__  # type: ignore[return-value]


def _decode(raw: bytes | bytearray, path: str, status: int, limit: int | None = None) -> tuple[Any, str | None]:
    """(body, None) or (None, why not). The body is the answer as parsed, checked strictly against the daemon's model
    of the route (types exactly a daemon's: "3" is no count, as `_checker`'s numbers), every string text, and every
    list no longer than a daemon lists (`_too_long`): what the merge code and the pages then read is what a daemon
    sends. The cheap checks come first (a mapping, its lists' lengths), then the walk for a lone surrogate, bounded
    by the model's nesting (`_not_text`), then the model: no check costs more than the answer's size."""
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json's recursion limit
        return None, f"HTTP {status}: not JSON"
    if status != 200:
        return _daemon_error(raw, body, status)
    model = answer_model(path)
    where = _shape_problem(model, path, body, limit) if model is not None else None
    if where is None:  # never merged: an answer holding one cannot be encoded (a 500)
        where = _not_text(raw, body, model)
    if where is None and model is FlowsResponse:
        where = _flow_edges_too_many(body)
    if where is None and model is not None:
        where = _invalid(model, body) or _bad_count(model, body) or (
            _flow_problem(body) if model is FlowsResponse else None)
    if where is not None:
        return None, f"HTTP 200: not a watchtower {path} answer ({where})"
    return body, None


def _shape_problem(model: type[BaseModel], path: str, body: Any, limit: int | None) -> str | None:
    """What makes `body` no answer of `model` at a glance, if anything: not a mapping (`body`, as the model's own
    check says), or a list longer than a daemon sends (`_too_long`)."""
    if not isinstance(body, dict):
        return "body"
    return _too_long(model, path, body, limit)


@functools.cache
def nesting(model: type[BaseModel]) -> int:
    """How deep `model`'s JSON nests lists and mappings (the answer itself is 1): no daemon's answer nests deeper."""
    return 1 + max((_nesting(info.annotation) for info in model.model_fields.values()), default=0)


def _nesting(kind: Any) -> int:
    """The nesting of a field's type: a model's own, a list or mapping one more than what it holds, a union its
    deepest member's."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return nesting(kind)
    origin = get_origin(kind)
    if origin is Literal:
        return 0
    inner = max((_nesting(arg) for arg in get_args(kind)), default=0)
    return inner + (1 if origin in (list, dict, tuple, set, frozenset) else 0)


def _invalid(model: type[BaseModel], body: Any) -> str | None:
    """Where `body` first fails the strict check of `model` (`_checker`), if anywhere. The items of its lists of
    models are checked one by one: pydantic holds the interpreter lock through one call, and one call for a whole
    answer of 10 MB held the event loop ~0.3 s (this runs on a decode thread for big answers)."""
    lists = [name for name, _ in _item_lists(model) if isinstance(body, dict) and isinstance(body.get(name), list)]
    try:
        _checker(model).validate_python({**body, **dict.fromkeys(lists, [])} if lists else body, strict=True)
        for name, item in _item_lists(model):
            if name in lists:
                check = _checker(item)
                for i, value in enumerate(body[name]):
                    try:
                        check.validate_python(value, strict=True)
                    except ValidationError as exc:
                        return f"{name}.{i}" + "".join(f".{x}" for x in _first_loc(exc))
    except ValidationError as exc:  # never exc.errors() of a whole answer: one bad item's errors at most
        return ".".join(str(x) for x in _first_loc(exc)) or "body"
    return None


def _first_loc(exc: ValidationError) -> tuple[int | str, ...]:
    return tuple(exc.errors(include_url=False)[0]["loc"])


def _not_json(constant: str) -> Any:
    """NaN, Infinity and -Infinity, which json.loads takes and JSON (RFC 8259) does not have."""
    raise ValueError(f"{constant} is not JSON")


_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""Where a lone surrogate may come from: an escape of one (`\\ud800`), or one UTF-8-encoded (json.loads decodes
bytes with `surrogatepass`). Neither is in a daemon's answer, whose pydantic encoding writes text as UTF-8."""


def _not_text(raw: bytes | bytearray, body: Any, model: type[BaseModel] | None) -> str | None:
    """Where the first lone surrogate of `body` is (`items.0.rcpt holds a lone surrogate`), if any: the parsed answer
    is walked only when its bytes hold a candidate (a pair of escapes is one too), and a daemon's never do. The walk
    goes no deeper than `model` nests (a list a daemon nests deeper is said instead), holds a place per level and
    writes out the path of the hit alone: a path per item made a few KiB of gzip nested deep cost GBs."""
    if (b"\\u" not in raw and b"\xed" not in raw) or not _SURROGATE_BYTES.search(raw):
        return None
    try:
        broken = first_surrogate_path(body, max_depth=nesting(model) if model is not None else None, aliases=False)
    except TooDeep as exc:
        return f"{exc.where} is nested deeper than a daemon's answer"
    return None if broken is None else f"{broken} holds a lone surrogate"


def _daemon_error(raw: bytes | bytearray, body: Any, status: int) -> tuple[Any, str | None]:
    """A 400 or 404 passes on only in the daemon's ApiError shape (its text, its parameter named by a string), every
    string text: any other body is no daemon's, and passed on it broke the hub's own ApiError (a 500)."""
    try:
        ApiError.model_validate(body, strict=True)
    except ValidationError:
        return None, NO_API if status == 404 else f"HTTP {status}: not a watchtower error"
    where = _not_text(raw, body, ApiError)
    if where is not None:  # never passed on: an answer holding one cannot be encoded (a 500)
        return None, f"HTTP {status}: not a watchtower error ({where})"
    return body, None


MAX_COUNT = 2**53
"""Largest count a daemon answers (beyond it a float loses units): the hub sums, divides and takes roots of them."""
FLOW_COUNTS = ("mainstat", "secondarystat", "detail__delivered", "detail__bounced", "detail__deferred",
               "detail__complained", "detail__remote_bounced")
COUNTS: dict[type[BaseModel], tuple[tuple[str | None, tuple[str, ...]], ...]] = {
    FlowsResponse: (("nodes", FLOW_COUNTS), ("edges", FLOW_COUNTS)),
    RepliesResponse: ((None, ("total",)), ("replies", ("count",))),
    LookupResponse: ((None, ("timelines_omitted",)),), TimelineResponse: ((None, ("timelines_omitted",)),),
    MessageResponse: ((None, ("recipients_total",)),),
}
"""Per answer model, the counts the hub merges: (list of items or None for the answer itself, their fields)."""


def _bad_count(model: type[BaseModel], body: dict[str, Any]) -> str | None:
    """Where a count the hub merges is negative or absurd (`edges.0.detail__delivered`), if anywhere: a liar's -50
    made the merged flows take the root of a negative (a 500), and 10**400 would not fit a float."""
    for key, fields in COUNTS.get(model, ()):
        rows = [(key, body)] if key is None else [(f"{key}.{i}", row) for i, row in enumerate(body.get(key) or [])]
        for where, row in rows:
            for name in fields:
                value = row.get(name, 0)  # a float too: the models take -50.0 for an int, the body keeps it
                if isinstance(value, int | float) and not 0 <= value <= MAX_COUNT:
                    return name if where is None else f"{where}.{name}"
    return None


FLOW_NODES = {"sender": 1000, "vmta": 10_000, "isp": len(ISP_NAMES) + 1}
"""Most nodes of each kind in one host's flows. ISPs: the classifier's names and `unknown`, all a daemon has; senders:
`correlator.max_flow_senders` (at most 999) and `other`. VMTAs have no bound of the daemon's own (every VMTA that
sent): the hub takes 10,000 of one host."""


def _too_long(model: type[BaseModel], path: str, body: Any, limit: int | None) -> str | None:
    """What list of `body` is longer than a daemon sends for `path`, if any (checked before the model: a list of
    150,000 items is never validated). Its list is at most the `limit` asked (search, messages, lookup, replies), or
    a daemon's own bound (the latest MAX_TIMELINES of a recipient; one timeline by id); each timeline's events at
    most twice what a daemon lists of each of that many timelines, and its `queued` mark (its own events and as many
    queue events: correlator/timeline.py); flows at most FLOW_NODES nodes (their edges: `_flow_edges_too_many`)."""
    if not isinstance(body, dict):
        return None
    if model is FlowsResponse:
        return _flows_too_long(body)
    if model in ASKED_LISTS:
        key, default = ASKED_LISTS[model]
        most, words = (default if limit is None else limit), "where at most {} were asked"
    elif model is TimelineResponse:
        key, words = "timelines", "where a daemon lists at most {}"
        most = 1 if path.startswith("/api/v1/timelines/") else MAX_TIMELINES
    else:
        return None
    items = body.get(key)
    if not isinstance(items, list):
        return None
    if len(items) > most:
        return f"{len(items)} {key} {words.format(most)}"
    if key in ("timelines", "recipients"):
        events = 2 * events_per_timeline(len(items)) + 1
        for i, item in enumerate(items):
            listed = item.get("events") if isinstance(item, dict) else None
            if isinstance(listed, list) and len(listed) > events:
                return f"{len(listed)} events in {key}.{i} where a daemon lists at most {events}"
    return None


def _flows_too_long(body: dict[str, Any]) -> str | None:
    """Flows' nodes past FLOW_NODES (the edges, as its nodes pair them, after the walk for a lone surrogate:
    `_flow_edges_too_many`)."""
    nodes = body.get("nodes")
    if not isinstance(nodes, list):
        return None
    if len(nodes) > sum(FLOW_NODES.values()):
        return f"{len(nodes)} nodes where the hub takes at most {sum(FLOW_NODES.values())}"
    kinds = _node_kinds(nodes)
    for kind, most in FLOW_NODES.items():
        if kinds[kind] > most:
            who = "a daemon lists" if kind == "isp" else "the hub takes"
            return f"{kinds[kind]} {kind} nodes where {who} at most {most}"
    return None


def _flow_edges_too_many(body: dict[str, Any]) -> str | None:
    """Edges past those its nodes can make (sender -> vmta, vmta -> isp): checked before the model, which would
    check each of them."""
    nodes, edges = body.get("nodes"), body.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        return None
    kinds = _node_kinds(nodes)
    pairs = (kinds["sender"] + kinds["isp"]) * kinds["vmta"]
    if len(edges) > pairs:
        return f"{len(edges)} edges where its nodes make at most {pairs}"
    return None


def _node_kinds(nodes: list[Any]) -> dict[str, int]:
    kinds = {kind: 0 for kind in FLOW_NODES}
    for node in nodes:
        kind = node.get("subtitle") if isinstance(node, dict) else None
        if isinstance(kind, str) and kind in kinds:
            kinds[kind] += 1
    return kinds


FLOW_EDGES = frozenset({("sender", "vmta"), ("vmta", "isp")})
"""The (source, target) kinds of a daemon's flow edges."""


def _flow_problem(body: dict[str, Any]) -> str | None:
    """Where a (validated) flows answer is not one a daemon makes, if anywhere: each node and edge once, every edge
    sender -> vmta or vmta -> isp between two of its nodes (so the hub's merge is of what its nodes bound)."""
    kind_of: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, node in enumerate(body["nodes"]):
        if node["id"] in kind_of:
            return f"nodes.{i} repeats the id of nodes.{first[node['id']]}"
        kind_of[node["id"]], first[node["id"]] = node["subtitle"], i
    first.clear()
    for i, edge in enumerate(body["edges"]):
        for end in ("source", "target"):
            if edge[end] not in kind_of:
                return f"edges.{i}.{end} is no node of the answer"
        pair = (kind_of[edge["source"]], kind_of[edge["target"]])
        if pair not in FLOW_EDGES:
            return f"edges.{i} goes from {pair[0]} to {pair[1]}"
        if edge["id"] in first:
            return f"edges.{i} repeats the id of edges.{first[edge['id']]}"
        first[edge["id"]] = i
    return None


def _why(exc: BaseException) -> str:
    """`Type: text` of an exception, one short line; of an exception group, its first leaf's (anyio's connect wraps
    the cause in one: `unhandled errors in a TaskGroup` says nothing)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, httpx.LocalProtocolError) and "header value" in str(exc):
        return f"{type(exc).__name__}: Illegal header value (not shown: it may hold a credential)"
    return _short(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def printable(text: str) -> str:
    """`text` without control or escape characters (a host's error text is shown in terminals and pages), its
    whitespace runs made one space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _short(text: str) -> str:
    """A target's error text as the hub quotes it (missing_hosts, the /ui banner): printable, addresses redacted as
    the hub's log lines are (exporter.redact's `redact_log_text`: a bare copy of an address's local part, `<alice>`,
    goes too; before the cut: a local part cut from its `@` is no longer found), 200 characters. A failing target's
    answer is remote text: `backend failed for alice@gmail.com` must not be copied into every answer of the hub."""
    text = redact_log_text(printable(text[:REDACTED_HEAD]))
    return text[:200] + ("..." if len(text) > 200 else "")


REDACTED_HEAD = 200 + 4096
"""Characters of a target's error text redacted before the cut to 200: room for a quoted or encoded local part."""

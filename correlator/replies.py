"""GET /api/v1/replies: the remote SMTP replies behind a VMTA x ISP's deferrals and bounces.

Prometheus says *that* Gmail throttles vmta-03 (a class count); an operator then needs *what Gmail
said*. This route groups the dsnDiag texts of t, tq and b records over a time window, after taking
out what varies per message (IPs, addresses, Gmail ids, long numbers), and returns the top texts
with counts, their response class and share. The status board's drill-down shows it (Infinity).

Cost is bounded whatever the request: the window is capped (`MAX_WINDOW`), the SQL scans at most
`SCAN_BUDGET` deferral and bounce events and as many queue events and groups in SQLite (`LIMIT` on every statement), and
`limit` caps the answer, and the SQL and the grouping in Python both stop at `web.api_query_timeout`
(503) like every /api/v1 route. The store is read through `reply_rows()` only, so a change of the
correlator's write model touches one function.

`/api/v1/lookup` serves the forensics dashboard: 200 with an empty list for an empty or unknown
key (the strict routes answer 400/404, which Grafana shows as a panel error on first open).

Mounted by `correlator/sink.py` through `with_replies()`, which also answers `//api/v1/...`: the
Infinity data source joins its base URL and a query URL by plain concatenation, so a base URL
ending in `/` asks for `//api/v1/flows`; those requests are redirected to the single-slash path.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from correlator import store
from correlator.api import (
    DIGITS,
    Api,
    BadRequest,
    ErrorRoute,
    check_budget,
    json_answer,
    parse_time,
    redirect_double_slash,
)
from correlator.keys import norm_message_id, norm_rcpt
from correlator.models import ApiError, Timeline
from correlator.timeline import capped_column, cut, iso
from exporter.metrics import PLACEHOLDER_NONE
from exporter.redact import without_addresses

MAX_WINDOW = 86400.0
"""Longest window read (s): an older `since` is moved up to `until - MAX_WINDOW` (`window_capped`)."""
SCAN_BUDGET = 100_000
"""Most t and b events, and most queue events, one request reads (the newest of the window)."""
MAX_FILTER_VALUES = 50
ANY = frozenset(("", "*", ".*", ".+", "$__all", "All"))
"""Filter values meaning "every VMTA/ISP" (what Grafana sends for All)."""
KINDS = {"t": "deferred", "tq": "queue_deferred", "b": "bounced"}

# Reply text is the remote server's: each pattern takes time linear in its length (tests/test_reply_regex_bounds.py
# lints them). A pattern that starts with a run is tried only where such a run starts (a lookbehind): unanchored,
# the run was read again from each of its characters (`_EMAIL`, `_TOKEN_ID`: quadratic; the Gmail id, whose two runs
# of the same characters around a letter tried every split as well: cubic, ~1 s for 1,600 characters).
_PREFIX = re.compile(r"^\s*[A-Za-z][\w.-]*;\s*")  # smtp; / x-pmta;
_ADDRESS_END = r"\s<>()\[\]\"',;:"
_EMAIL = re.compile(rf"(?<![^{_ADDRESS_END}])[^{_ADDRESS_END}]+@[^{_ADDRESS_END}]+")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
_GMAIL_RUN = re.compile(r"(?<![A-Za-z0-9-])([A-Za-z0-9-]*)\.\d+(?= - gsmtp)")
"""A run of id characters with its `.digits` right before ` - gsmtp`: where `_gmail_id` looks for a Gmail id."""
_TOKEN_RUN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{12,}")
"""A run of 12 or more token characters: where `_token_id` looks for a queue or message id."""
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")
_LONG_NUMBER = re.compile(r"\b\d{5,}\b")
_SPACES = re.compile(r"\s+")
MAX_TEXT = 400
NORMALISED_INPUT = 4 * MAX_TEXT
"""Characters of a reply normalised (the rest is an ellipsis): MAX_TEXT are shown, and a bound on the work per row
of a request that may read 200,000 of them (one 200,000-character reply held the daemon ~200 s)."""


def normalise(diag: str) -> str:
    """One reply text per kind of reply: the per-message parts replaced by <ip>, <addr>, <id>, <n>."""
    diag = diag or ""
    text = _PREFIX.sub("", diag[:NORMALISED_INPUT])
    text = _EMAIL.sub("<addr>", text)
    text = _IPV4.sub("<ip>", text)
    text = _IPV6.sub("<ip>", text)
    text = _GMAIL_RUN.sub(_gmail_id, text)
    text = _TOKEN_RUN.sub(_token_id, text)
    text = _LONG_NUMBER.sub("<n>", text)
    text = _SPACES.sub(" ", text).strip()
    return text[:MAX_TEXT] + ("…" if len(text) > MAX_TEXT or len(diag) > NORMALISED_INPUT else "")


def _is_word(c: str) -> bool:
    """`c` as `\\w` (and so `\\b`) of a str pattern reads it: Unicode letters and digits, and `_`."""
    return c.isalnum() or c == "_"


def _boundaries(text: str, start: int, end: int) -> Iterator[int]:
    """The `\\b` positions in [start, end] of a run of ASCII id characters text[start:end], left to right; inside it
    only `-` is not a word character."""
    before = start > 0 and _is_word(text[start - 1])
    for i in range(start, end):
        here = text[i] != "-"
        if here != before:
            yield i
        before = here
    if before != (end < len(text) and _is_word(text[end])):
        yield end


def _gmail_id(m: re.Match[str]) -> str:
    """`_GMAIL_RUN`'s match with the id `\\b[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\\.\\d+(?= - gsmtp)` finds in it
    replaced: the id starts at the run's first word boundary, and needs a letter after it (a later start has fewer)."""
    text, start, dot = m.string, m.start(1), m.end(1)
    first = next((b for b in _boundaries(text, start, dot) if b < dot), None)
    if first is None or _LETTER.search(text, first, dot) is None:
        return m.group()
    return text[start:first] + "<id>"


def _token_id(m: re.Match[str]) -> str:
    """`_TOKEN_RUN`'s match with what `\\b(?=[A-Za-z0-9_-]*\\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{12,}\\b` finds
    in it replaced: one id at most, from the first word boundary to the last one 12 or more characters on, when the
    run from there holds a letter and a digit (or a digit follows it: the lookahead's `\\d` reads one character on)."""
    text, start, end = m.string, m.start(), m.end()
    found = list(_boundaries(text, start, end))
    first = found[0] if found and found[0] < end else None
    if first is None or found[-1] < first + 12 or _LETTER.search(text, first, end) is None:
        return m.group()
    if _DIGIT.search(text, first, end) is None and not text[end:end + 1].isdecimal():
        return m.group()
    return text[start:first] + "<id>" + text[found[-1]:end]


# --- the one place that knows the store layout ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyRow:
    """Records with one exact (type, status, diag) for one vmta x isp, with their time span."""

    kind: str
    vmta: str
    isp: str
    status: str
    diag: str
    bounce_cat: str
    dsn_mta: str
    count: int
    first: float
    last: float


def _selection(vmtas: list[str] | None, pools: list[str] | None, alias: str) -> tuple[str, list[str]]:
    """SQL (` AND ...`) and parameters keeping the events of `vmtas` and `pools` (None: all). A pool is the record's
    vmtaPool, as for the metrics' vmta_pool label, whose `none` is a record without one."""
    sql, params = "", []
    if vmtas is not None:
        sql += f" AND {alias}vmta IN ({','.join('?' * len(vmtas))})"
        params += vmtas
    if pools is not None:
        named = [p for p in pools if p != PLACEHOLDER_NONE]
        either = [f"{alias}pool IN ({','.join('?' * len(named))})"] if named else []
        if len(named) < len(pools):
            either.append(f"coalesce({alias}pool, '') = ''")
        sql += f" AND ({' OR '.join(either)})"
        params += named
    return sql, params


def reply_rows(
    conn: sqlite3.Connection, since: float, until: float, vmtas: list[str] | None, budget: int = SCAN_BUDGET,
    pools: list[str] | None = None,
) -> tuple[list[ReplyRow], bool]:
    """t/b events of timelines and tq queue events logged in [since, until), grouped by exact text.

    `vmtas` and `pools` None mean all. Returns (rows, scan_limited): scan_limited is True when a budget cut
    the scan short, so the counts cover part of the window. tq rows have no ISP here (isp='')
    and keep the queue domain in `dsn_mta`'s place for the caller to classify.
    """
    vm_sql, vm_params = _selection(vmtas, pools, "e.")
    # The window's newest `budget` t and b events through their own time index (store.REPLY_EVENTS), whenever their
    # message was queued (picking timelines by first_seen left out every message retried for longer than a lookback,
    # and so every message-expired bounce), then the selection: the rows examined are bounded whatever it is (a rare
    # VMTA's filter applied during the index walk read every event of the window). Each event's ISP is its
    # timeline's (a primary-key join per event).
    texts = ", ".join(map(capped_column, ("status", "diag", "bcat", "mta")))  # grouped and shown: cut (timeline.py)
    newest = (f"SELECT tl, type, vmta, pool, {texts}, t FROM corr_events WHERE {store.REPLY_EVENTS}"
              " AND t >= ? AND t < ? ORDER BY t DESC LIMIT ?")
    sql = (
        "SELECT e.type, e.vmta, tl.isp, e.status, e.diag, e.bcat, e.mta, count(*), min(e.t), max(e.t)"
        f" FROM ({newest}) e JOIN corr_timelines tl ON tl.id = e.tl WHERE 1{vm_sql}"
        " GROUP BY e.type, e.vmta, tl.isp, e.status, e.diag, e.bcat ORDER BY count(*) DESC LIMIT ?"
    )
    rows = [ReplyRow(store.TYPE_NAMES[r[0]], r[1] or "", r[2] or "", r[3] or "", r[4] or "", r[5] or "",
                     r[6] or "", r[7], r[8], r[9])
            for r in conn.execute(sql, [since, until, budget, *vm_params, budget])]
    limited = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM corr_events WHERE {store.REPLY_EVENTS} AND t >= ? AND t < ? LIMIT ?)",
        [since, until, budget + 1]).fetchone()[0] > budget

    q_vm, q_params = _selection(vmtas, pools, "")
    q_sql = (
        "SELECT vmta, queue, status, diag, bcat, mta, count(*), min(t), max(t) FROM"
        f" (SELECT vmta, queue, {texts}, t FROM corr_queue_events WHERE t >= ? AND t < ?{q_vm}"
        " ORDER BY t DESC LIMIT ?) GROUP BY vmta, queue, status, diag, bcat ORDER BY count(*) DESC LIMIT ?"
    )
    q_rows = conn.execute(q_sql, [since, until, *q_params, budget + 1, budget])
    queued = 0
    for vmta, queue, status, diag, bcat, mta, n, first, last in q_rows:
        queued += n
        domain = (queue or "").partition("/")[0]
        rows.append(ReplyRow("tq", vmta or "", "", status or "", diag or "", bcat or "", f"{domain}\n{mta or ''}",
                             n, first, last))
    return rows, limited or queued > budget


# --- response models ------------------------------------------------------------------------------


class Reply(BaseModel):
    """One normalised reply text and how often it came back."""

    reply: str = Field(description="dsnDiag with IPs, addresses, ids and long numbers replaced by <ip>, <addr>, "
                       "<id>, <n>; the `smtp;` prefix removed.")
    status: str = Field(description="dsnStatus of the most frequent exact text, e.g. `4.7.28 (...)`.")
    response_class: str | None = Field(description="Reply class from the classifier (throttled, reputation, ...).")
    kind: str = Field(description="deferred (t), queue_deferred (tq) or bounced (b).")
    vmta: str
    isp: str
    count: int = Field(description="Records with this text in the window.")
    share: float = Field(description="count / all t, tq and b records of the selection in the window.")
    first_seen: str | None
    last_seen: str | None
    example: str = Field(description="One exact dsnDiag of this group.")


class RepliesResponse(BaseModel):
    vmta: list[str] | None = Field(description="VMTAs asked for; null = all.")
    pool: list[str] | None = Field(description="VMTA pools asked for; null = all.")
    isp: list[str] | None = Field(description="ISPs asked for; null = all.")
    since: str | None
    until: str | None
    window_capped: bool = Field(description="`since` was moved up to `until` minus 24 hours.")
    scan_limited: bool = Field(description="The scan budget was reached: counts cover part of the window.")
    total: int = Field(description="t, tq and b records of the selection in the window.")
    replies: list[Reply]


# --- route -----------------------------------------------------------------------------------------


def filter_values(name: str, raw: str | None) -> list[str] | None:
    """Comma-separated filter values; None (all) for empty, `.*`, `*` or Grafana's All."""
    if raw is None:
        return None
    values = [v.strip() for v in raw.split(",")]
    values = [v.strip("{}") for v in values if v.strip()]
    if not values or any(v in ANY for v in values):
        return None
    if len(values) > MAX_FILTER_VALUES:
        raise BadRequest(400, f"at most {MAX_FILTER_VALUES} values", name)
    if any(len(v) > 200 for v in values):
        raise BadRequest(400, "value longer than 200 characters", name)
    return values


IspOfDomain = Callable[[str, str], str]


def default_isp_of_domain() -> IspOfDomain:
    """exporter.classify's ISP table for tq queue domains (the raw domain if unavailable)."""
    fn: list[IspOfDomain] = []

    def isp_of(domain: str, dsn_mta: str) -> str:
        if not fn:
            try:
                from exporter.classify import IspClassifier

                fn.append(IspClassifier.load().classify)
            except Exception:  # noqa: BLE001 - degrade to the domain
                fn.append(lambda d, _m: d or "unknown")
        return fn[0](domain, dsn_mta)

    return isp_of


def top_replies(
    rows: list[ReplyRow], isps: list[str] | None, limit: int, class_of: Callable[[str, str, str, str], str],
    isp_of_domain: IspOfDomain, check: Callable[[], None] = check_budget, hashed: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """Merge exact texts into normalised groups per (vmta, isp, kind); the `limit` largest first.

    Up to 2 x SCAN_BUDGET rows each go through the regexes of `normalise`: `check` before every row
    stops that work at the request's time budget (QueryBudgetExceeded, a 503). `hashed` (hash_recipients): a
    text stored with an address (before hashing was on, or by an older version) is grouped and shown as
    `without_addresses` gives it, its `example` included."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    total = 0
    for r in rows:
        check()
        if hashed and (r.diag or r.status):
            r = dataclasses.replace(r, diag=without_addresses(r.diag), status=without_addresses(r.status))
        isp, mta = r.isp, r.dsn_mta
        if r.kind == "tq":
            domain, _, mta = r.dsn_mta.partition("\n")
            isp = isp_of_domain(domain, mta)
        if isps is not None and isp not in isps:
            continue
        total += r.count
        key = (r.vmta, isp, r.kind, normalise(r.diag) or r.status or "(no reply text)")
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"reply": key[3], "kind": KINDS[r.kind], "vmta": r.vmta, "isp": isp, "count": 0,
                               "first": r.first, "last": r.last, "_best": -1, "status": r.status,
                               "example": r.diag, "response_class": class_of(isp, r.status, r.diag, r.bounce_cat)}
        g["count"] += r.count
        g["first"], g["last"] = min(g["first"], r.first), max(g["last"], r.last)
        if r.count > g["_best"]:
            g["_best"], g["status"], g["example"] = r.count, r.status, r.diag
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], g["vmta"], g["isp"], g["reply"]))[:limit]
    out = []
    for g in ranked:
        out.append({"reply": cut(g["reply"]), "status": cut(g["status"]), "response_class": g["response_class"] or None,
                    "kind": g["kind"], "vmta": g["vmta"], "isp": g["isp"], "count": g["count"],
                    "share": round(g["count"] / total, 4) if total else 0.0, "first_seen": iso(g["first"]),
                    "last_seen": iso(g["last"]), "example": cut(g["example"])})
    return out, total


def build_replies_router(api: Api, isp_of_domain: IspOfDomain | None = None) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["correlator"], route_class=ErrorRoute)
    isp_of = isp_of_domain or default_isp_of_domain()
    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": ApiError, "description": "Bad parameter (named in `parameter`)."},
        503: {"model": ApiError, "description": "Store not ready or busy, or the query exceeded its time budget."},
        "default": {"model": ApiError, "description": "Any other error (401, 405): same body."},
    }

    @router.get("/replies", response_model=RepliesResponse, responses=errors,
                summary="Top remote replies (normalised) behind the deferrals and bounces of a VMTA x ISP")
    def replies(
        vmta: Annotated[str | None, Query(description="VMTA(s), comma-separated; empty, `.*` or All = every VMTA.")]
        = None,
        isp: Annotated[str | None, Query(description="ISP label value(s) as in the metrics (`gmail`), "
                                         "comma-separated; empty, `.*` or All = every ISP.")] = None,
        pool: Annotated[str | None, Query(description="VMTA pool(s) as in the metrics' vmta_pool (`none`: records "
                                          "without one), comma-separated; empty, `.*` or All = every pool.")] = None,
        since: Annotated[str, Query(description="Start: epoch, ISO 8601 or e.g. `1h` ago; at most 24h before "
                                    "`until` (older starts are moved up).")] = "1h",
        until: Annotated[str | None, Query(description="End (exclusive), same forms; default now.")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Most reply texts returned."), DIGITS] = 10,
    ) -> Any:
        now = float(int(api.clock()))  # whole seconds, as every time the API gives (a relative window is echoed)
        lo = parse_time("since", since, now)
        hi = parse_time("until", until, now)
        hi = now if hi is None else hi
        if lo is None:
            raise BadRequest(400, "since is required", "since")
        if lo >= hi:
            raise BadRequest(400, "since must be before until", "since")
        capped = hi - lo > MAX_WINDOW
        lo = max(lo, hi - MAX_WINDOW)
        vmtas, isps, pools = filter_values("vmta", vmta), filter_values("isp", isp), filter_values("pool", pool)
        with api.connection() as conn:
            rows, limited = reply_rows(conn, lo, hi, vmtas, pools=pools)
        items, total = top_replies(rows, isps, limit, api.class_of, isp_of, hashed=api.hasher.hashed)
        return json_answer(RepliesResponse, {"vmta": vmtas, "pool": pools, "isp": isps, "since": iso(lo),
                                             "until": iso(hi), "window_capped": capped, "scan_limited": limited,
                                             "total": total, "replies": items})

    return router


class LookupResponse(BaseModel):
    message_id: str | None
    job_id: str | None
    rcpt: str | None
    hint: str | None = Field(description="What to enter when nothing was asked for or nothing matched.")
    # Typed, not list[dict]: serialized through /timeline's model, every Event field is present (null when absent),
    # and the OpenAPI document describes it (a dict list gave a `queued` event 5 keys here and 19 on /timeline).
    timelines: list[Timeline] = Field(description="Timelines with their events, as /api/v1/timeline.")
    timelines_omitted: int = Field(default=0, description="Timelines of this key not listed (the oldest).")


def build_lookup_router(api: Api) -> APIRouter:
    """/api/v1/lookup: the forensics dashboard's tables, which open with empty text boxes.

    The /api/v1/messages and /api/v1/timeline routes answer an empty or unknown key with 400/404,
    which the Infinity data source shows as a panel error. This route answers 200 with an empty
    list and a hint instead, so an unfilled or mistyped lookup reads as "No data".
    """
    router = APIRouter(prefix="/api/v1", tags=["correlator"], route_class=ErrorRoute)

    @router.get("/lookup", response_model=LookupResponse,
                responses={400: {"model": ApiError}, 503: {"model": ApiError},
                           "default": {"model": ApiError, "description": "Any other error (401, 405): same body."}},
                summary="Timelines by Message-Id and/or (jobId, rcpt); empty input or no match is an empty list")
    def lookup(
        message_id: Annotated[str | None, Query(description="Message-Id (header), with or without <>.")] = None,
        job_id: Annotated[str | None, Query(description="PMTA jobId; needs rcpt.")] = None,
        rcpt: Annotated[str | None, Query(description="Recipient address; with job_id or message_id.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most timelines returned."), DIGITS] = 100,
    ) -> Any:
        mid = norm_message_id(message_id or "")
        job = (job_id or "").strip()
        addr = norm_rcpt(rcpt or "")
        key = api.rcpt_key(addr) if addr else None  # a value no address has is a 400 on rcpt, whatever else is given
        body: dict[str, Any] = {"message_id": api.key_shown(mid, addr, "message_id") or None,
                                "job_id": api.key_shown(job, addr, "job_id") or None,
                                "rcpt": api.rcpt_shown(addr) if addr else None,
                                "hint": None, "timelines": []}
        if not mid and not (job and addr):
            body["hint"] = "enter a Message-Id, or a job id and a recipient"
            return json_answer(LookupResponse, body)
        with api.connection() as conn:
            reader = api.reader(conn)
            links = api.hasher.links  # the store's scheme (keys.LinkKeys)
            if addr:  # a recipient's sends: the latest `limit` of them (the latest MAX_TIMELINES at most)
                items, older = (reader.by_job_rcpt(links.job_hash(job), key) if job
                                else reader.by_message_rcpt(links.message_hash(mid), key))
                body["timelines"], body["timelines_omitted"] = items[-limit:], older + max(0, len(items) - limit)
            else:  # a message's recipients, in the order stored
                items, total = reader.by_message(links.message_hash(mid), limit)
                body["timelines"], body["timelines_omitted"] = items, total - len(items)
                body["message_id"] = api.message_id_shown(mid, items)
        if not items:
            body["hint"] = "no timeline stored for this key (check the id, or the retention)"
        return json_answer(LookupResponse, body)

    return router


def with_replies(api_router: APIRouter, api: Api) -> APIRouter:
    """The correlator's routes plus /api/v1/replies and /api/v1/lookup, and `//api/v1/...`
    redirected to `/api/v1/...`."""
    top = APIRouter()
    top.include_router(api_router)
    top.include_router(build_replies_router(api))
    top.include_router(build_lookup_router(api))
    redirect_double_slash(top)
    return top

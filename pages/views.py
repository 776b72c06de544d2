"""The page routes under /ui: search, a message's forensic view, a timeline, the Sankey flows."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from correlator.api import MAX_TIME, MIN_TIME, path_segment
from exporter.redact import REDACTED
from pages.backend import Backend
from pages.html import attr, e, error_box, input_value, not_boxed, page, partial_banner, query, u
from pages.sankey import attempts, sankey_svg, shares

VMTA_DASHBOARD_UID = "watchtower-vmta"
"""uid of grafana/dashboards/watchtower-vmta.json (tests/browser checks they agree)."""

MAX_TEXT = 998
"""Longest Message-Id, recipient or jobId a page passes on (RFC 5322's line length)."""
MAX_TIME_TEXT = 64
MESSAGE_PAGE = 100
"""Recipients per message page; `Next recipients` follows the API's cursor. Each shows its events (up to 100 queue
events each): at the API's most, 1,000, one page of a large mailing was 66 MB of HTML."""
MESSAGE_EVENTS = 50
"""Events shown per recipient on a message page; the rest on the recipient's own timeline page (a link)."""
MAX_CURSOR = 16_384
"""A hub's cursor holds every unfinished host's position (hub/cursors.py, at most 12,288 characters): as long as the
hub's request head accepts."""
MAX_TIMELINE_ID = 2**63 - 1

Text = Annotated[str | None, Query()]
"""Query text; lengths are checked by the view (`too_long`), which answers a page, not the API's JSON error."""


def too_long(**limited: tuple[str | None, int]) -> str | None:
    """The name of the first value longer than its limit, if any."""
    return next((name for name, (value, limit) in limited.items() if value is not None and len(value) > limit), None)


def length_error(name: str, limit: int) -> tuple[int, dict[str, Any]]:
    return 400, {"error": f"{name} is longer than {limit} characters", "parameter": name, "status": 400}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def grafana_link(grafana_url: str, vmta: str | None, ts: float | None, host: str | None,
                 until: float | None = None) -> str:
    """The VMTA drill-down dashboard around the event time, or from `ts` to `until` (a timeline's span), one hour
    either side. The dashboard's path goes after grafana_url's path, and a query it has (`?orgId=2`) is kept, before
    the link's own parameters."""
    base = urlsplit(grafana_url)
    params: dict[str, Any] = {"var-vmta": vmta}
    if host:
        params["var-instance"] = host
    ts, until = _when(ts), _when(until)
    if ts is not None:  # (a time that is none, NaN or 1e308 made int() raise: the page was a 500)
        end = ts if until is None else max(ts, until)
        params["from"], params["to"] = int((ts - 3600) * 1000), int((end + 3600) * 1000)
    joined = "&".join(q for q in (base.query, query(**params)) if q)  # grafana_url's own as written (`kiosk`)
    path = base.path.rstrip("/") + f"/d/{VMTA_DASHBOARD_UID}/"
    return html.escape(urlunsplit((base.scheme, base.netloc, path, joined, "")), quote=True)


def _when(ts: Any) -> float | None:
    """`ts` if it is a time the API gives (epoch seconds from 1970 to 9999), else None: what the pages read is an
    answer (on the hub, made of the hosts'), and a link is left without its window rather than the page failing."""
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not MIN_TIME <= ts <= MAX_TIME:  # (false for NaN)
        return None
    return float(ts)


def _epoch(iso: Any) -> float | None:
    """Seconds of an answer's ISO time (`...Z`), or None."""
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _time(iso: str | None) -> str:
    if not iso:
        return e(None)
    try:
        return e(datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S") + "Z")
    except ValueError:
        return e(iso)


def _outcome(o: str | None) -> str:
    return f'<span class="badge o-{e(o)}">{e(o)}</span>'


SHOWN_TEXT = 1000
"""Characters of one reply field shown in a page (the API answers it whole): a remote server's 200,000-character
reply was a 205 KB page of one cell, and a message page shows up to 100 recipients of 50 events."""


def _reply(ev: dict[str, Any]) -> str:
    if ev.get("kind") == "complaint":
        bits = [ev.get("feedback_type"), ev.get("user_agent"), ev.get("reporting_mta")]
    else:
        bits = [ev.get("dsn_status"), ev.get("dsn_diag"), ev.get("dsn_mta"), ev.get("reporting_mta")]
    return "<br>".join(_shown(b) for b in bits if b) or e(None)


def _shown(text: Any) -> str:
    if not isinstance(text, str) or len(text) <= SHOWN_TEXT:
        return e(text)
    return f"{e(text[:SHOWN_TEXT])}… ({len(text) - SHOWN_TEXT:,} more characters: the API answers them)"


REDACTION_MARKS = ("<rcpt>", REDACTED)
"""What hash_recipients leaves in a stored Message-Id or jobId (correlator/prepare.py): `<rcpt>` in place of the
recipient's address (exporter.redact.without_recipient), `[redacted]` in place of a local part (a report without a
recipient: its jobId)."""
REDACTED_TITLE = ("Redacted (hash_recipients): the recipient's address in it is shown as <rcpt> (a local part as "
                  "[redacted]). A lookup needs the value as logged: this text finds nothing.")


def redacted(item: dict[str, Any], value: Any) -> bool:
    """Whether `value`, the Message-Id or jobId of `item` (a search row or a timeline), is shown redacted. Lookups hash
    the value as logged, so a redacted one finds nothing: no link nor search is made of it. `<rcpt>` and
    `[redacted]` are the marks when the row says hashing is on (`rcpt_hashed`), `[redacted]` on a row without a
    recipient (no `rcpt_hashed` then)."""
    if not isinstance(value, str):
        return False
    if item.get("rcpt_hashed") is True:  # (`[redacted]`: another recipient's address in the key)
        return any(mark in value for mark in REDACTION_MARKS)
    return item.get("rcpt") is None and REDACTION_MARKS[1] in value


def _key(item: dict[str, Any], value: Any) -> str:
    """A Message-Id or jobId as text; a redacted one says so (a title), and is never a link."""
    if redacted(item, value):
        return f'<span class="redacted" title="{attr(REDACTED_TITLE)}">{e(value)}</span>'
    return e(value)


def redaction_hint(*typed: str | None) -> str:
    """Why a Message-Id or jobId copied from a page finds nothing: it was shown redacted. `rcpt>`: the search box
    strips a Message-Id's angle brackets (`<<rcpt>.1@x>` is looked up as `rcpt>.1@x`)."""
    if not any(v and ("rcpt>" in v or REDACTION_MARKS[1] in v) for v in typed):
        return ""
    return ('<p class="meta" id="redacted-hint"><code>&lt;rcpt&gt;</code> and <code>[redacted]</code> stand for what '
            "<code>hash_recipients</code> leaves out of a Message-Id or jobId shown here: a lookup needs the value "
            "as logged. Search by recipient, or open the timeline from its search row.</p>")


BackendFor = Callable[[Request], Backend]



def next_problem(body: dict[str, Any]) -> str:
    """Why a hub gave no cursor although hosts hold more (`next_cursor_problem`): said, not a page that just ends."""
    problem = body.get("next_cursor_problem")
    return f'<p class="warn next-problem">No next page: {e(problem)}</p>' if problem else ""

class Views:
    def __init__(self, backend_for: BackendFor, grafana_url: str, title: str) -> None:
        self.backend_for, self.grafana_url, self.title = backend_for, grafana_url, title

    async def ask(self, request: Request, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        backend = self.backend_for(request)
        answer = await backend.get(path, params)
        request.state.retry_after = getattr(backend, "retry_after", None)
        return answer

    def page(self, request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
        """The page; an error status keeps the API's Retry-After (when to ask again), as a client of the API gets."""
        out = page(title, body, _root(request), status, self.title)
        retry_after = getattr(request.state, "retry_after", None)
        if retry_after and status in (429, 503):
            out.headers["retry-after"] = retry_after
        return out

    # --- search -------------------------------------------------------------------------------

    def form(self, root: str, message_id: str = "", rcpt: str = "", job_id: str = "") -> str:
        # POSTed: the recipient typed stays out of the URL (browser history, a proxy's log); answered as the GET
        return (f'<form class="search" method="post" action="{u(root + "/ui/")}" role="search">'
                f'<label>Message-Id<input name="message_id" value="{input_value(message_id)}" '
                f'placeholder="abc@mail.example"></label>'
                f'<label>Recipient<input name="rcpt" value="{input_value(rcpt)}" '
                f'placeholder="user@example.com"></label>'
                f'<label>Job<input name="job_id" value="{input_value(job_id)}" placeholder="jobId"></label>'
                f'<button type="submit">Search</button></form>')

    def summary_rows(self, root: str, items: list[dict[str, Any]]) -> str:
        hosts = any(it.get("host") for it in items)  # the hub names hosts; a daemon has one
        rows = []
        for it in items:
            # The row's own timeline: by id (and host, on a hub). A message's page lists its first recipients only,
            # so the newest of a large one (search's first rows) were not on the page a row linked to.
            if isinstance(it.get("id"), int):
                href = u(root + f"/ui/timelines/{it['id']}", host=it.get("host"))
            elif it.get("job_id") and it.get("rcpt") and not it.get("rcpt_hashed"):  # not hashed: keys as logged
                href = u(root + "/ui/timeline", rcpt=it["rcpt"], job_id=it["job_id"])
            else:
                href = ""
            first = f'<a href="{href}">{_time(it.get("first_seen"))}</a>' if href else _time(it.get("first_seen"))
            mid = _key(it, it.get("message_id"))
            if it.get("message_id") and not redacted(it, it["message_id"]):  # every recipient, a page at a time
                mid = f'<a href="{u(root + "/ui/messages/" + path_segment(str(it["message_id"])))}">{mid}</a>'
            rows.append(
                f"<tr><td>{first}</td><td>{_outcome(it.get('outcome'))}</td><td class=mono>{e(it.get('rcpt'))}</td>"
                f"<td class=mono>{mid}</td><td class=free>{_key(it, it.get('job_id'))}</td>"  # free-form: may wrap
                f"<td class=free>{e(it.get('vmta'))}</td><td>{e(it.get('isp'))}</td>"
                + (f"<td class=free>{e(it.get('host'))}</td>" if hosts else "") +
                f"<td class=num>{e(it.get('attempts'))}</td></tr>")
        return ('<table id="results"><thead><tr><th>First seen (UTC)</th><th>Outcome</th><th>Recipient</th>'
                "<th>Message-Id</th><th>Job</th><th>VMTA</th><th>ISP</th>" + ("<th>Host</th>" if hosts else "")
                + "<th>Attempts</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")

    async def search(self, request: Request, message_id: str | None, rcpt: str | None, job_id: str | None,
                     cursor: str | None) -> Response:
        root = _root(request)
        bad = too_long(message_id=(message_id, MAX_TEXT), rcpt=(rcpt, MAX_TEXT), job_id=(job_id, MAX_TEXT),
                       cursor=(cursor, MAX_CURSOR))
        if bad:
            form = self.form(root, message_id or "", rcpt or "", job_id or "")
            return self.page(request, "Search", form + error_box(*length_error(bad, MAX_CURSOR if bad == "cursor"
                                                                                else MAX_TEXT)), 400)
        mid = (message_id or "").strip().strip("<>").strip()
        if mid:  # the message's page itself: a redirect to /ui/messages/ID put the Message-Id (which may embed the
            # recipient's address) in the URL the form posts to keep it out of (browser history, a proxy's log)
            return await self.message(request, mid, cursor, searched=True)
        params = {"rcpt": (rcpt or "").strip() or None, "job_id": (job_id or "").strip() or None,
                  "cursor": cursor, "limit": 50}
        status, body = await self.ask(request, "/api/v1/search", params)
        form = self.form(root, "", params["rcpt"] or "", params["job_id"] or "")  # in the page (not kept: no-store),
        form += not_boxed(recipient=params["rcpt"], job=params["job_id"])  # never in a URL
        heading = "Matching timelines" if params["rcpt"] or params["job_id"] else "Latest timelines"
        if status != 200:
            return self.page(request, "Search", form + error_box(status, body), status)
        more = ""
        if body.get("next_cursor") and (params["rcpt"] or params["job_id"]):  # posted, as the search: an address
            # (a jobId may embed one) stays out of the URL
            fields = "".join(f'<input type="hidden" name="{name}" value="{attr(value)}">' for name, value in
                             (("rcpt", params["rcpt"]), ("job_id", params["job_id"]), ("cursor", body["next_cursor"]))
                             if value)
            more = (f'<form id="next" class="next" method="post" action="{u(root + "/ui/")}">{fields}'
                    '<button type="submit">Next page</button></form>')
        elif body.get("next_cursor"):
            href = u(root + "/ui/", job_id=params["job_id"], cursor=body["next_cursor"])
            more = f'<p><a id="next" href="{href}">Next page</a></p>'
        more = more or next_problem(body)
        if body.get("scan_limited"):  # the API stopped at its scan budget: not "no match", only "none so far"
            empty = ('<p id="scan-limited" class="warn">The search stopped at its scan budget'
                     + (" before finding a match" if not body.get("items") else "")
                     + ": <b>Next page</b> continues it (or narrow it by recipient or job).</p>")
        else:
            empty = "" if body.get("items") else ('<p id="none">No timeline matches.</p>'
                                                  + redaction_hint(params["job_id"]))
        return self.page(request, "Search", form + partial_banner(body) + f"<h1>{e(heading)}</h1>" + empty
                         + self.summary_rows(root, body.get("items") or []) + more)

    # --- forensics ----------------------------------------------------------------------------

    def timeline_section(self, n: int, tl: dict[str, Any], max_events: int | None = None, root: str = "") -> str:
        """One recipient's timeline; on a message page its latest `max_events` events (the outcome and the reports
        after it), with a link to the rest above them (a recipient deferred for days has hundreds, and a page shows
        MESSAGE_PAGE recipients). Rows are numbered in the whole timeline: the API leaves out its oldest events past
        its own bound (`events_omitted`), and the notes saying what is left out stand above the table."""
        host = tl.get("host")
        rows = []
        events = tl.get("events") or []
        older = tl.get("events_omitted")
        older = older if isinstance(older, int) else 0
        hidden = max(0, len(events) - max_events) if max_events is not None else 0
        notes = [f"{older} older events not listed by the store's answer."] if older else []
        if hidden:
            more = f"{hidden} earlier events not shown here"
            if isinstance(tl_id := tl.get("id"), int):
                more = f'<a class="all-events" href="{u(root + f"/ui/timelines/{tl_id}", host=host)}">{more}</a>'
            notes.append(more + ".")
        for i, ev in enumerate(events[hidden:], start=older + hidden + 1):
            vmta = ev.get("vmta")
            vcell = (f'<a class="grafana" href="{grafana_link(self.grafana_url, vmta, ev.get("ts"), host)}">'
                     f"{e(vmta)}</a>") if vmta else e(None)
            rows.append(
                f'<tr class="event" data-kind="{attr(ev.get("kind"))}" data-ts="{attr(ev.get("ts"))}">'
                f"<td class=num>{i}</td><td>{_time(ev.get('time'))}</td><td>{e(ev.get('kind'))}</td>"
                f"<td class=num>{e(ev.get('attempt'))}</td><td class=free>{vcell}</td>"
                f"<td class=mono>{e(ev.get('source_ip'))}</td>"
                f"<td class=mono>{_reply(ev)}</td><td>{e(ev.get('response_class'))}</td>"
                f"<td class=mono>{e(ev.get('source'))}</td></tr>")
        omitted = tl.get("queue_events_omitted") or 0
        if omitted:
            notes.append(f"{e(omitted)} older queue deferrals not listed.")
        note = "".join(f'<p class="meta">{text}</p>' for text in notes)  # each escaped where built
        tl_vmta = tl.get("vmta")
        span = [t for ev in events if (t := _when(ev.get("ts"))) is not None]
        begun = _epoch(tl.get("first_seen")) if older else None  # events left out: the timeline began before them
        start = begun if begun is not None else min(span, default=None)
        href = grafana_link(self.grafana_url, tl_vmta, start, host, max(span, default=None))
        vlink = f'<a class="grafana" href="{href}">{e(tl_vmta)}</a>' if tl_vmta else e(None)
        return (  # <bdi>: a right-to-left value (Hebrew, Arabic) does not reorder the words around it
            f'<section class="rcpt" id="rcpt-{n}"><h2><bdi class="mono">{e(tl.get("rcpt"))}</bdi> '
            f'{_outcome(tl.get("outcome"))}</h2><div class="meta">'
            f'{"host <bdi>" + e(host) + "</bdi> &middot; " if host else ""}job <bdi>{_key(tl, tl.get("job_id"))}</bdi>'
            f' &middot; from <bdi class="mono">{e(tl.get("orig"))}</bdi> &middot; VMTA <bdi>{vlink}</bdi> (pool '
            f'<bdi>{e(tl.get("vmta_pool"))}</bdi>) &middot; ISP <bdi>{e(tl.get("isp"))}</bdi> &middot; attempts '
            f'{e(tl.get("attempts"))} &middot; queued {_time(tl.get("queued_at"))} &middot; done '
            f'{_time(tl.get("done_at"))}</div>'
            f'{note}<table class="events"><thead><tr><th>#</th><th>Time (UTC)</th><th>Kind</th><th>Attempt</th>'
            "<th>VMTA</th><th>Source IP</th><th>Reply</th><th>Class</th><th>Record (file:line)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")

    async def message(self, request: Request, message_id: str, cursor: str | None = None,
                      searched: bool = False) -> Response:
        """A message's recipients, a page at a time. `searched`: asked through the search (`/ui/`, the form posts),
        not by the page's URL: its next page is posted as the search was, the Message-Id never put in a URL."""
        root = _root(request)
        form = self.form(root, message_id)
        if bad := too_long(message_id=(message_id, MAX_TEXT), cursor=(cursor, MAX_CURSOR)):
            status, body = length_error(bad, MAX_CURSOR if bad == "cursor" else MAX_TEXT)
        else:
            status, body = await self.ask(request, "/api/v1/messages/" + path_segment(message_id),
                                          {"limit": MESSAGE_PAGE, "cursor": cursor})
        if status != 200:
            return self.page(request, f"Message {message_id}",
                             form + error_box(status, body) + redaction_hint(message_id), status)
        recips = body.get("recipients") or []
        trunc = (f'<p class="meta">{len(recips)} of {e(body.get("recipients_total"))} recipients shown'
                 + (" (a later page)" if cursor else "") + ".</p>" if body.get("truncated") else "")
        tail = ""
        if body.get("next_cursor") and searched:  # above the timelines and below them
            fields = "".join(f'<input type="hidden" name="{name}" value="{attr(value)}">' for name, value in
                             (("message_id", message_id), ("cursor", body["next_cursor"])))
            tail = (f'<form class="next" method="post" action="{u(root + "/ui/")}">{fields}'
                    '<button type="submit">Next recipients</button></form>')
            trunc += tail
        elif body.get("next_cursor"):
            href = u(root + "/ui/messages/" + path_segment(message_id), cursor=body["next_cursor"])
            tail = f'<p><a class="next" href="{href}">Next recipients</a></p>'
            trunc += tail
        elif problem := next_problem(body):
            trunc += problem
        # with hash_recipients the answer echoes the Message-Id without a recipient's address in it (`<rcpt>`)
        shown = _key(recips[0] if recips else {}, body.get("message_id"))
        head = (f'<h1>Message-Id <span class="mono" id="message-id">&lt;{shown}&gt;</span></h1>'
                f'<p class="meta">{e(body.get("recipients_total"))} recipient(s)</p>')
        sections = await run_in_threadpool(  # up to MESSAGE_PAGE timelines of events: not on the event loop
            lambda: "".join(self.timeline_section(i, tl, MESSAGE_EVENTS, root) for i, tl in enumerate(recips)))
        return self.page(request, f"Message {body.get('message_id')}",
                         form + partial_banner(body) + head + trunc + sections + tail)

    async def timeline(self, request: Request, rcpt: str, job_id: str | None, message_id: str | None) -> Response:
        root = _root(request)
        searched_rcpt, searched_job = rcpt.strip(), (job_id or "").strip()
        form = self.form(root, "", searched_rcpt, searched_job) + not_boxed(recipient=searched_rcpt, job=searched_job)
        bad = too_long(rcpt=(rcpt, MAX_TEXT), job_id=(job_id, MAX_TEXT), message_id=(message_id, MAX_TEXT))
        if bad:
            status, body = length_error(bad, MAX_TEXT)
        else:
            status, body = await self.ask(request, "/api/v1/timeline",
                                          {"rcpt": rcpt, "job_id": job_id, "message_id": message_id})
        if status != 200:
            return self.page(request, "Timeline", form + error_box(status, body) + redaction_hint(job_id, message_id),
                             status)
        head = f'<h1>Recipient <span class="mono">{e(body.get("rcpt"))}</span> job {e(body.get("job_id"))}</h1>'
        older = body.get("timelines_omitted")
        timelines = body.get("timelines") or []
        if isinstance(older, int) and older:
            head += f'<p class="meta">The latest {len(timelines)} sends; {older} older not listed.</p>'
        sections = await run_in_threadpool(  # up to MAX_TIMELINES of events: not on the event loop
            lambda: "".join(self.timeline_section(i, tl) for i, tl in enumerate(timelines)))
        return self.page(request, "Timeline", form + partial_banner(body) + head + sections)

    async def timeline_by_id(self, request: Request, timeline_id: str, host: str | None) -> Response:
        """One timeline by the id (and, on a hub, the host) a search row carries: the link for rows that have
        neither a Message-Id nor a recipient to ask with (hashed recipients, a complaint without keys)."""
        form = self.form(_root(request))
        tid = int(timeline_id) if timeline_id.isascii() and timeline_id.isdigit() and len(timeline_id) < 20 else 0
        if not 1 <= tid <= MAX_TIMELINE_ID:
            status, body = 400, {"error": "timeline_id must be an integer in 1..2^63-1", "parameter": "timeline_id",
                                 "status": 400}
        elif too_long(host=(host, MAX_TEXT)):
            status, body = length_error("host", MAX_TEXT)
        else:
            status, body = await self.ask(request, f"/api/v1/timelines/{tid}", {"host": host})
        if status != 200:
            return self.page(request, "Timeline", form + error_box(status, body), status)
        head = f"<h1>Timeline {e(tid)}</h1>"
        sections = await run_in_threadpool(  # a timeline of 1,000s of events, as on `timeline`: not on the event loop
            lambda: "".join(self.timeline_section(i, tl) for i, tl in enumerate(body.get("timelines") or [])))
        return self.page(request, f"Timeline {tid}", form + partial_banner(body) + head + sections)

    # --- flows --------------------------------------------------------------------------------

    async def flows(self, request: Request, since: str, until: str | None) -> Response:
        root = _root(request)
        shown_since, shown_until = since.strip(), (until or "").strip()
        form = (f'<form class="search" method="get" action="{u(root + "/ui/flows")}">'
                f'<label>Since<input name="since" value="{input_value(shown_since)}" '
                'placeholder="1h, 7d, ISO 8601"></label>'
                f'<label>Until<input name="until" value="{input_value(shown_until)}" placeholder="(now)">'
                '</label><button type="submit">Show</button></form>' + not_boxed(since=shown_since, until=shown_until))
        bad = too_long(since=(since, MAX_TIME_TEXT), until=(until, MAX_TIME_TEXT))
        if bad:
            status, body = length_error(bad, MAX_TIME_TEXT)
        else:
            status, body = await self.ask(request, "/api/v1/flows", {"since": since, "until": until})
        if status != 200:
            return self.page(request, "Flows", form + error_box(status, body), status)
        drawn = await run_in_threadpool(flows_body, body)  # a hub's flows hold 10,000s of edges: not on the event loop
        return self.page(request, "Flows", form + partial_banner(body) + drawn)


def flows_body(body: dict[str, Any]) -> str:
    """The flows page under its form: heading, Sankey diagram and the table of links."""
    rows = []
    nodes = {n["id"]: n for n in body.get("nodes") or []}
    for x in body.get("edges") or []:
        ok, deferred, bounced = shares(x)
        src, dst = nodes.get(x["source"], {}), nodes.get(x["target"], {})
        rows.append(
            f'<tr data-edge="{attr(x["id"])}"><td class=free>{e(src.get("subtitle"))} {e(src.get("title"))}</td>'
            f'<td class=free>{e(dst.get("subtitle"))} {e(dst.get("title"))}</td><td class=num>{attempts(x)}</td>'
            f"<td class=num>{e(x.get('detail__delivered'))}</td><td class=num>{ok:.1%}</td>"
            f"<td class=num>{deferred:.1%}</td><td class=num>{bounced:.1%}</td>"
            f"<td class=num>{e(x.get('detail__complained'))}</td></tr>")
    table = ('<table id="links"><thead><tr><th>From</th><th>To</th><th>Attempts</th><th>Delivered</th>'
             "<th>Delivered share</th><th>Deferral share</th><th>Bounce share</th><th>Complaints</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    head = (f"<h1>Flows since {_time(body.get('since'))}"
            f"{' until ' + _time(body.get('until')) if body.get('until') else ''}</h1>"
            '<p class="meta">sender &rarr; VMTA &rarr; ISP; link width by attempts (delivered + deferred + '
            "bounced), colour from red (none delivered) to green (all delivered).</p>")
    return head + sankey_svg(body) + table


def build_pages_router(backend_for: BackendFor, grafana_url: str = "http://localhost:3000",
                       title: str = "PMTA Watchtower") -> APIRouter:
    views = Views(backend_for, grafana_url, title)
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("")
    async def search_without_slash(request: Request) -> Response:
        """`/ui` typed by hand: the search page is `/ui/` (the listener does not redirect slashes of its own)."""
        query = request.url.query
        return RedirectResponse(_root(request) + "/ui/" + (f"?{query}" if query else ""), status_code=308)

    @router.get("/")
    async def search(request: Request, message_id: Text = None, rcpt: Text = None, job_id: Text = None,
                     cursor: Text = None) -> Response:
        return await views.search(request, message_id, rcpt, job_id, cursor)

    @router.get("/messages/{message_id:path}")
    async def message(request: Request, message_id: str, cursor: Text = None) -> Response:
        return await views.message(request, message_id, cursor)

    @router.get("/timeline")
    async def timeline(request: Request, rcpt: Text = None, job_id: Text = None, message_id: Text = None) -> Response:
        if not (rcpt or "").strip():  # blank is missing, as on every route: the job's search
            return await views.search(request, None, None, job_id, None)
        return await views.timeline(request, rcpt, job_id, message_id)

    @router.get("/timelines/{timeline_id}")
    async def timeline_by_id(request: Request, timeline_id: str, host: Text = None) -> Response:
        return await views.timeline_by_id(request, timeline_id, host)

    @router.get("/flows")
    async def flows(request: Request, since: Text = "1h", until: Text = None) -> Response:
        return await views.flows(request, since or "1h", until)

    @router.get("/{rest:path}")  # last: a mistyped or later page is a page too, with the way back
    async def unknown(request: Request, rest: str) -> Response:
        root = _root(request)
        return views.page(request, "Not found", views.form(root) + error_box(404, {
            "error": f"no page {request.url.path} (pages: /ui/, /ui/flows, /ui/messages/ID)"}), 404)

    return router

"""PMTA's HTTP management interface, served from the simulator's live queue state.

Routes and shapes follow pmta-http-api.md: `/status` (the §4 tree), `/queues` (top-N by recipients,
`queue=` globs such as `*/vmta-03`), `/vmtas` (only VMTAs with queued mail), `/domains`. `format=xml`
gives `<rsp><data>...</data><succ/></rsp>`, `format=json` gives `{"data":...,"status":"success",
"message":""}`. Access: X-API-Key and/or "IP allowed" per `ApiSpec`, else 403. `app.state.fault`
lets tests make the API slow, failing or garbled.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from typing import Any
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from simulator.clock import format_monitor_time
from simulator.queues import Queue

_ZERO_QUEUE = {"rcp": 0, "dom": 0, "kb": 0.0}


def _kb(nbytes: int) -> float:
    return round(nbytes / 1024, 1)


def to_xml(tag: str, value: Any) -> str:
    """Element tree from nested dicts; a list repeats its tag, bools are 0/1, floats keep one decimal."""
    if isinstance(value, list):
        return "".join(to_xml(tag, v) for v in value)
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(to_xml(k, v) for k, v in value.items()) + f"</{tag}>"
    if value is None or value == "":
        return f"<{tag}/>"
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, float):
        text = f"{value:.1f}"
    else:
        text = escape(str(value))
    return f"<{tag}>{text}</{tag}>"


def _json_num(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_num(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_num(v) for v in value]
    if isinstance(value, float) and value == 0:
        return 0  # PMTA prints 0 for a zero kb, 5.5 otherwise
    return value


MAIL_FROM_MS = 2
"""perf: PMTA's answer to MAIL FROM from a LAN injector (ms; pmta-http-api.md §4.3 says the unit is UNCERTAIN,
probably ms)."""
RCPT_MS = 2
"""perf: the rest of the envelope (RCPT TO, one recipient per message), counted only in totalTime."""
DATA_BASE_MS = 4
"""perf: DATA's fixed part (the reply after the spool write)."""
DATA_KB_PER_MS = 12.5
"""perf: DATA's transfer, about 100 Mbit/s from the injector."""


def inbound_perf(last_min_in: list[int]) -> dict[str, int]:
    """`traffic/perf/lastMin/in`: `count` messages received in the last minute, and per message on average the ms
    MAIL FROM took, DATA took (grows with the average size) and the whole transaction took; all 0 on an idle host,
    as in both 5.0 samples. Whether PMTA's times are averages or sums is UNCERTAIN; averages are simulated."""
    _, msgs, nbytes = last_min_in
    if not msgs:
        return {"count": 0, "mailFromTime": 0, "dataTime": 0, "totalTime": 0}
    data = round(DATA_BASE_MS + nbytes / 1024 / msgs / DATA_KB_PER_MS)
    return {"count": msgs, "mailFromTime": MAIL_FROM_MS, "dataTime": data,
            "totalTime": MAIL_FROM_MS + RCPT_MS + data}


class MonitorData:
    """Builds the `data` part of each page from the simulator (read-only: never touches its random state)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    @property
    def now(self) -> int:
        return max(self.sim.t, self.sim.start)

    def _time(self, ts: float) -> str:
        return format_monitor_time(ts, self.sim.tz)

    def status(self) -> dict[str, Any]:
        book, now = self.sim.book, self.now
        rcp, dom, nbytes = book.totals()
        conn_out = sum(q.connections(now) for q in book.queues.values())
        tr = book.traffic

        def window(values: list[int]) -> dict[str, Any]:
            return {"rcp": values[0], "msg": values[1], "kb": _kb(values[2])}

        def traffic(i: int | None, top: bool = False) -> dict[str, Any]:
            if i is None:
                return {"out": window(tr.total_out), "in": window(tr.total_in),
                        "bounceProcessed": tr.processed["bounce"], "feedbackLoopProcessed": tr.processed["fbl"]}
            wo, wi, wb, wf = (tr.windows[k][i] for k in ("out", "in", "bounce", "fbl"))
            return {"out": window(wo.top if top else wo.sum), "in": window(wi.top if top else wi.sum),
                    "bounceProcessed": (wb.top if top else wb.sum)[0],
                    "feedbackLoopProcessed": (wf.top if top else wf.sum)[0]}

        queue = {t: dict(_ZERO_QUEUE) for t in ("pipe", "discard", "file", "alias", "bounceProcessor",
                                                  "feedbackLoopProcessor")}
        return {
            "mta": {
                "product": {"name": "PowerMTA", "version": "5.0r8", "buildDate": "2023-03-01 10:00:00",
                            "revision": "v5_0r8@230301.sim", "bits": 64},
                "lak": {"serial": "000000", "instances": 1},
                "os": {"name": "Linux", "version": "5.14.0-sim.x86_64", "build": "pmta-sim"},
                "cpu": {"type": "x86_64", "count": 2},
                "ram": {"real": 3878876},
                "fullHostName": "pmta-sim.example",
                "userString": "",
                "hostId": 0,
            },
            "status": {
                "timeNow": self._time(now),
                "startupTime": self._time(self.sim.start),
                "shuttingDown": False,
                "traffic": {"total": traffic(None), "lastHr": traffic(1), "lastMin": traffic(0),
                            "topPerHr": traffic(1, top=True), "topPerMin": traffic(0, top=True),
                            "perf": {"lastMin": {"in": inbound_perf(tr.windows["in"][0].sum)}}},
                "conn": {"smtpIn": {"cur": tr.conn_in, "max": 200, "top": max(tr.conn_in, 20)},
                         "smtpOut": {"cur": conn_out, "max": 1000, "top": max(conn_out, 76)}},
                "resolver": {"namesCached": len(book.queues), "queriesPending": 0, "queriesActive": 0},
                "queue": {"smtp": {"rcp": rcp, "dom": dom, "kb": _kb(nbytes)}, **queue},
                "spool": {"initPct": 100, "dirs": 3, "files": {"inUse": rcp, "recycled": 0, "total": 12288},
                          "totalRcp": rcp, "maxRcp": 2880000},
                "status": "running",
            },
        }

    def queue_entry(self, q: Queue, paused_as_bool: bool = False) -> dict[str, Any]:
        now = self.now
        retry = q.blocked_until if q.blocked_until > now else (q.next_retry if q.next_retry > now else 0)
        entry: dict[str, Any] = {"name": q.name, "rcp": q.rcp, "kb": _kb(q.bytes), "conn": q.connections(now)}
        if q.events:
            entry["event"] = [{"type": "error", "time": self._time(t), "text": text} for t, text in q.events]
        entry["paused"] = q.paused if paused_as_bool else ("yes" if q.paused else "no")
        entry["mode"] = "backoff" if q.in_backoff(now) else "normal"
        entry["retryTime"] = self._time(retry) if retry else ""
        return entry

    def matching_queues(self, pattern: str | None) -> list[Queue]:
        qs = [q for q in self.sim.book.queues.values() if q.rcp > 0]
        if pattern:
            pat = pattern if "/" in pattern else f"{pattern}/*"
            qs = [q for q in qs if fnmatch.fnmatchcase(q.name, pat)]
        qs.sort(key=lambda q: (-q.rcp, q.name))
        return qs

    def queues(self, pattern: str | None, max_items: int, paused_as_bool: bool = False) -> dict[str, Any]:
        """Top `max_items` queues matching `pattern`; totalRcp and totalQueuesWithRcp over the matching queues, or
        with `api.total_rcp: global` over every queue (pmta-http-api.md §5.3: "recipients in all queues";
        what a `queue=` filter does to them is UNCERTAIN)."""
        qs = self.matching_queues(pattern)
        top = qs[:max_items]
        counted = qs if self.sim.config.api.total_rcp == "filtered" or not pattern else self.matching_queues(None)
        return {"title": f"Top {len(top)} queues by number of recipients",
                "queue": [self.queue_entry(q, paused_as_bool) for q in top],
                "totalRcp": sum(q.rcp for q in counted), "totalQueuesWithRcp": len(counted)}

    def vmtas(self, max_items: int) -> dict[str, Any]:
        now = self.now
        agg: dict[str, dict[str, Any]] = {}
        for q in self.sim.book.queues.values():
            if q.rcp:
                v = agg.setdefault(q.vmta, {"name": q.vmta, "dom": 0, "rcp": 0, "kb": 0, "conn": 0})
                v["dom"] += 1
                v["rcp"] += q.rcp
                v["kb"] += q.bytes
                v["conn"] += q.connections(now)
        rows = sorted(agg.values(), key=lambda v: (-v["rcp"], v["name"]))[:max_items]
        return {"vmta": [dict(v, kb=_kb(v["kb"])) for v in rows]}

    def domains(self, max_items: int) -> dict[str, Any]:
        now = self.now
        agg: dict[str, dict[str, Any]] = {}
        for q in self.sim.book.queues.values():
            if q.rcp:
                d = agg.setdefault(q.domain, {"name": q.domain, "rcp": 0, "kb": 0, "conn": 0})
                d["rcp"] += q.rcp
                d["kb"] += q.bytes
                d["conn"] += q.connections(now)
        rows = sorted(agg.values(), key=lambda d: (-d["rcp"], d["name"]))[:max_items]
        return {"domain": [dict(d, kb=_kb(d["kb"])) for d in rows]}


def build_app(sim: Any) -> Starlette:
    """The management API for `sim` (a Simulator); mount it on any ASGI server."""
    spec = sim.config.api
    data = MonitorData(sim)

    async def page(request: Request, build: Any) -> Response:
        fault = request.app.state.fault
        if request.app.state.delay:
            await asyncio.sleep(request.app.state.delay)
        key = request.headers.get("x-api-key")
        if not (spec.allow_without_key or (spec.api_key and key == spec.api_key)):
            return PlainTextResponse("access is forbidden", status_code=403)
        if fault == "http_500":
            return PlainTextResponse("internal error", status_code=500)
        fmt = request.query_params.get("format", "")
        if fault == "garbled":
            return Response(b"<rsp><data><queue><name>gmail.com/vm\x00\xff", media_type=spec.xml_content_type)
        body = build(request)
        if fmt == "json":
            payload = {"data": _json_num(body), "status": "success", "message": ""}
            if fault == "no_succ":
                payload = {"errors": [{"message": "simulated failure"}]}
            return Response(json.dumps(payload), media_type="application/json")
        if fmt == "xml":
            tail = "" if fault == "no_succ" else "<succ/>"
            return Response(f"<rsp>{to_xml('data', body)}{tail}</rsp>", media_type=spec.xml_content_type)
        return HTMLResponse("<html><body><h1>PowerMTA (simulated)</h1><p>Add ?format=xml or ?format=json.</p>"
                            "</body></html>")

    def max_items(request: Request) -> int:
        return spec.max_items

    as_bool = spec.json_paused == "bool"

    async def status(request: Request) -> Response:
        return await page(request, lambda r: data.status())

    async def queues(request: Request) -> Response:
        return await page(request, lambda r: data.queues(r.query_params.get("queue"), max_items(r),
                                                         as_bool and r.query_params.get("format") == "json"))

    async def vmtas(request: Request) -> Response:
        return await page(request, lambda r: data.vmtas(max_items(r)))

    async def domains(request: Request) -> Response:
        return await page(request, lambda r: data.domains(max_items(r)))

    async def home(request: Request) -> Response:
        return await page(request, lambda r: {"title": "PowerMTA (simulated)", **data.domains(max_items(r))})

    app = Starlette(routes=[Route("/", home), Route("/status", status), Route("/queues", queues),
                            Route("/vmtas", vmtas), Route("/domains", domains)])
    app.state.fault = None
    app.state.delay = 0.0
    app.state.data = data
    return app

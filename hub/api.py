"""The hub's /api/v1: the daemon's routes and parameters, answered by fanning out to every host.

Every answer carries `partial`, `missing_hosts` and `hosts`; items carry `host`. A host that is
down or slow never turns an answer into a 500: only when no host answered at all is the status
503 (with the same fields), and a Message-Id found nowhere is a 404 naming the hosts not asked.
Relative times (`since=1h`) are resolved once on the hub's clock and sent as epoch seconds, so every
host reads the same window. Empty query values are absent ones, as on a daemon (ErrorRoute).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from correlator import render
from correlator.api import (
    DIGITS,
    MAX_ID,
    BadRequest,
    ErrorRoute,
    FormatParam,
    echoed,
    path_segment,
    redirect_double_slash,
    want_text,
)
from correlator.models import ApiError, Outcome
from correlator.replies import filter_values
from hub import merge, threads
from hub.encode import json_answer
from hub.fanout import NO_API, Fanout, HostAnswer, printable
from hub.messages import message_page
from hub.models import (
    HubFlowsResponse,
    HubLookupResponse,
    HubMessageResponse,
    HubRepliesResponse,
    HubSearchResponse,
    HubTimelineResponse,
)
from hub.places import NOT_AMONG_TARGETS
from hub.privacy import PlainWithheld
from hub.search import resolve_times
from hub.search import search as merged_search
from hub.targets import Target, TargetSet
from hub.threads import off_loop

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiError, "description": "Bad parameter (named in `parameter`)."},
    404: {"model": ApiError, "description": "No host holds this key (see `missing_hosts`)."},
    503: {"model": ApiError, "description": "No host answered."},
}


NO_TARGETS = "no targets configured or discovered"
SAID_CHARS = 300
"""Characters of why one discovery source failed, in a 503 (a file path and an error line fit)."""


def _said(text: str) -> str:
    """One discovery problem as an answer quotes it: printable, one line, at most SAID_CHARS."""
    text = printable(text)
    return text[:SAID_CHARS] + ("..." if len(text) > SAID_CHARS else "")


def _params(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _window(params: dict[str, Any]) -> dict[str, Any]:
    """`params` (resolve_times'), or the daemon's 400 on `since` when `until` is not after it (/flows, /replies):
    checked here, the answer is that 400 whatever the hosts are (none, down, or an older daemon that answered a
    backwards /flows window with the data of the bucket both bounds fall in)."""
    if "since" in params and "until" in params and float(params["since"]) >= float(params["until"]):
        raise BadRequest(400, "since must be before until", "since")
    return params


def _fail(status: int, error: str, parameter: str | None, part: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": error, "parameter": parameter, "status": status, **part}, status_code=status)


def _text(text: str, part: dict[str, Any], problem: str | None = None) -> PlainTextResponse:
    """A text answer, then `problem` and the hosts that did not answer (as the JSON's missing_hosts) on last lines,
    escaped as render escapes every value (a discovered host's name is a Prometheus label anyone could set)."""
    tail = (f"{render.safe(problem)}\n" if problem else "") + (
        f"partial answer{_missing_note(part)}\n" if part["missing_hosts"] else "")
    return PlainTextResponse(text + tail)


def _missing_note(part: dict[str, Any]) -> str:
    """` (hosts not answering: a, b)`, control characters escaped: it goes into text answers and error messages."""
    if not part["missing_hosts"]:
        return ""
    return " (hosts not answering: " + ", ".join(render.safe(m["host"]) for m in part["missing_hosts"]) + ")"


STORED_HOSTS_SHOWN = 10
"""Hosts named in a /timeline 404 as storing the job (or Message-Id) but not for the recipient; then `and N more`."""


def _timeline_not_found(answers: list[HostAnswer], part: dict[str, Any], job_id: str | None,
                        message_id: str | None) -> JSONResponse:
    """/timeline's 404 when no host holds a timeline, naming the parameter as the daemons do: `rcpt` when any host
    answered that it stores the job (or Message-Id), not for this recipient (the key exists, the recipient is what
    is not there), else the key parameter (no host that answered stores it). Hosts that did not answer are in
    missing_hosts, as on every route: the key may be on one of them."""
    job = (job_id or "").strip()
    key = f"job {echoed(job)}" if job else f"Message-Id {echoed((message_id or '').strip().strip('<>'))}"
    stored = [a.target.name for a in answers if a.ok and a.status == 404 and isinstance(a.body, dict)
              and a.body.get("parameter") == "rcpt"]
    if not stored:
        return _fail(404, f"no timeline for {key} on any host" + _missing_note(part),
                     "job_id" if job else "message_id", part)
    names = ", ".join(render.safe(n) for n in stored[:STORED_HOSTS_SHOWN])
    more = len(stored) - STORED_HOSTS_SHOWN
    names += f" and {more} more" if more > 0 else ""
    return _fail(404, f"no timeline for this recipient {'in' if job else 'of'} {key} on any host ({key} is stored "
                 f"on {names}, not for this recipient)" + _missing_note(part), "rcpt", part)


class Hub:
    """Targets + fan-out; what the routes and the pages' backend share."""

    def __init__(self, targets: TargetSet, fanout: Fanout, clock: Callable[[], float] = time.time) -> None:
        self.targets = targets
        self.fanout = fanout
        self.clock = clock
        """Wall clock that relative times are resolved against (replaceable in tests)."""
        self.withhold = PlainWithheld()
        """Every answer's timelines and items pass it: no address beside a hash (hub/privacy.py)."""

    async def ask(self, path: str, params: dict[str, Any]) -> tuple[list[Target], list[HostAnswer]]:
        targets = await self.targets.current()
        return targets, await self.fanout.all(targets, path, params)

    async def aclose(self) -> None:
        """The hub's end: its connections closed, its threads (hub.threads) ended."""
        try:
            await self.fanout.aclose()
        finally:
            threads.shutdown()


def build_hub_router(hub: Hub) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["hub"], route_class=ErrorRoute)

    def settled(targets: list[Target], answers: list[HostAnswer], fine: tuple[int, ...] = (200,),
                ) -> tuple[dict[str, Any], JSONResponse | None]:
        """The partial fields, and the answer when there is nothing to merge: a 400 every host that answered gave,
        or a 503. A host that answered for itself alone (merge.settle: a 400 beside the others' answers, a status
        the route never answers) is a missing host, never the whole fleet's 400."""
        rejected = merge.settle(answers, fine)
        part = merge.partial_fields(targets, answers)
        if rejected is not None:
            return part, _fail(400, rejected["error"], rejected["parameter"], part)
        return part, none_answered(answers, part, targets)

    def without_route(answers: list[HostAnswer]) -> None:
        """A daemon never answers 404 on a route without a path parameter (flows, replies): one that does lacks the
        route (its correlator off, an older version), so it is a missing host, not an empty answer."""
        for a in answers:
            if a.ok and a.status == 404:
                a.error = NO_API

    def none_answered(answers: list[HostAnswer], part: dict[str, Any], targets: list[Target]) -> JSONResponse | None:
        """503 when no host could be asked, worded by the cause: none answered, or those the cursor goes on with
        are out of the targets (`away`), or there is no target at all."""
        asked = [a for a in answers if not a.away]
        if asked and all(not a.ok for a in asked):
            return _fail(503, "no host answered" + _missing_note(part), None, part)
        if asked:
            return None
        if away := [a.target.name for a in answers if a.away]:
            return _fail(503, "the hosts this cursor goes on with are not among the current targets "
                         f"({', '.join(away)}): ask again later", None, part)
        if not targets:
            return _fail(503, no_targets(), None, part)
        return None

    def no_targets() -> str:
        """Why there is no target: nothing configured, or the discovery sources never read (named)."""
        failed = [_said(why) for why in hub.targets.undiscovered()]
        return NO_TARGETS + (": discovery failed: " + "; ".join(failed) if failed else "")

    @router.get("/messages/{message_id:path}", response_model=HubMessageResponse, responses=_ERRORS,
                summary="Every recipient's timeline of one Message-Id, on every host")
    async def get_message(
        request: Request, message_id: str,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most recipients returned."), DIGITS] = 100,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
        format: FormatParam = None,
    ) -> Any:
        if not message_id.strip().strip("<>").strip():
            raise BadRequest(400, "empty Message-Id", "message_id")
        targets = await hub.targets.current()
        body, answers = await message_page(hub.fanout, targets, "/api/v1/messages/" + path_segment(message_id),
                                           message_id, limit, cursor, hub.targets.named)
        part = merge.partial_fields(targets, answers)
        if body is None:
            early = none_answered(answers, part, targets)
            if early is not None:
                return early
            return _fail(404, f"no timeline for Message-Id {echoed(message_id.strip().strip('<>'))} on any host"
                         + _missing_note(part), "message_id", part)
        body["recipients"] = await off_loop(hub.withhold, body["recipients"])
        if want_text(request, format):
            note = render.message_note(len(body["recipients"]), body["recipients_total"], body["next_cursor"])
            notes = (note, body["next_cursor_problem"], _missing_note(part).strip())
            return PlainTextResponse(await off_loop(
                render.timelines, f"Message-Id <{body['message_id']}>", body["recipients"],
                " ".join(x for x in notes if x)))
        return await json_answer(HubMessageResponse, {**body, **part})

    @router.get("/timeline", response_model=HubTimelineResponse, responses=_ERRORS,
                summary="Timeline of one recipient of one job (or Message-Id), on every host")
    async def get_timeline(
        request: Request,
        rcpt: Annotated[str, Query(description="Recipient address.")],
        job_id: Annotated[str | None, Query(description="PMTA jobId; one of job_id / message_id is required.")] = None,
        message_id: Annotated[str | None, Query(description="Message-Id instead of job_id.")] = None,
        format: FormatParam = None,
    ) -> Any:
        targets, answers = await hub.ask("/api/v1/timeline", _params(rcpt=rcpt, job_id=job_id, message_id=message_id))
        part, early = settled(targets, answers, (200, 404))
        if early is not None:
            return early
        hub.withhold.learn(answers, rcpt)
        items = await off_loop(hub.withhold, merge.tagged(answers, "timelines"))
        if not items:
            return _timeline_not_found(answers, part, job_id, message_id)
        oks = merge.answered(answers)
        first, older = merge.shown(oks), merge.omitted(oks)
        if want_text(request, format):  # the recipient as the hosts show it (hashed when they hash), not as asked
            note = f"{older} older sends not listed" if older else ""
            job = (first.get("job_id") or job_id.strip()) if job_id and job_id.strip() else ""  # as the hosts show
            title = render.lookup_title(job, first.get("message_id") or (message_id or "").strip().strip("<>"),
                                        first.get("rcpt") or "-")
            return _text(await off_loop(render.timelines, title, items, note), part)
        return await json_answer(HubTimelineResponse, {
            "job_id": first.get("job_id"), "message_id": first.get("message_id"), "rcpt": first.get("rcpt"),
            "timelines": items, "timelines_omitted": older, **part})

    @router.get("/timelines/{timeline_id}", response_model=HubTimelineResponse, responses=_ERRORS,
                summary="One timeline by the id and host a search returned")
    async def get_timeline_by_id(
        request: Request,
        timeline_id: Annotated[int, Path(ge=1, le=MAX_ID, description="`id` from a search item."), DIGITS],
        host: Annotated[str, Query(description="The `host` of the search item (ids are per host).")],
        format: FormatParam = None,
    ) -> Any:
        targets = await hub.targets.current()
        target = next((t for t in targets if t.name == host), None)
        if target is None:
            raise BadRequest(404, f"unknown host {echoed(host)}", "host")
        ans = await hub.fanout.one(target, f"/api/v1/timelines/{timeline_id}", {})
        part = merge.partial_fields([target], [ans])
        if not ans.ok:
            return _fail(503, f"host {host} did not answer: {ans.error}", None, part)
        if ans.status != 200:
            passed = merge.passed_on(ans.body if isinstance(ans.body, dict) else {})
            return _fail(ans.status, passed["error"], passed["parameter"], part)
        items = await off_loop(hub.withhold, merge.tagged([ans], "timelines"))
        if not items:  # an odd daemon's way of saying what a daemon says with a 404
            return _fail(404, f"no timeline {timeline_id} on host {host}", "timeline_id", part)
        if want_text(request, format):
            return PlainTextResponse(await off_loop(render.timeline, items[0]))
        shown = items[0]  # the keys as the timeline shows them (without its recipient once a host hashes)
        keys = {"job_id": shown.get("job_id"), "message_id": shown.get("message_id"), "rcpt": shown.get("rcpt") or ""}
        return await json_answer(HubTimelineResponse, {**ans.body, **keys, "timelines": items, **part})

    @router.get("/search", response_model=HubSearchResponse, responses=_ERRORS,
                summary="Find timelines on every host, newest first, one cursor for all hosts")
    async def search(
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
        filters = _params(rcpt=rcpt, job_id=job_id, vmta=vmta, outcome=outcome, since=since, until=until)
        targets = await hub.targets.current()
        if not targets:
            return _fail(503, no_targets(), None, merge.partial_fields(targets, []))
        body, failed = await merged_search(hub.fanout, targets, filters, limit, cursor, filters, hub.clock(),
                                           hub.targets.named)
        part = merge.partial_fields(targets, failed)
        if len([f for f in failed if not (f.away or f.stuck)]) == len(targets):
            return _fail(503, "no host answered" + _missing_note(part), None, part)
        body["items"] = await off_loop(hub.withhold, body["items"])
        if want_text(request, format):
            return _text(render.search(body), part, body["next_cursor_problem"])
        return await json_answer(HubSearchResponse, {**body, **part})

    @router.get("/lookup", response_model=HubLookupResponse, responses=_ERRORS,
                summary="Timelines by Message-Id and/or (jobId, rcpt) on every host; no match is an empty list")
    async def lookup(
        message_id: Annotated[str | None, Query(description="Message-Id (header), with or without <>.")] = None,
        job_id: Annotated[str | None, Query(description="PMTA jobId; needs rcpt.")] = None,
        rcpt: Annotated[str | None, Query(description="Recipient address; with job_id or message_id.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most timelines returned."), DIGITS] = 100,
    ) -> Any:
        targets, answers = await hub.ask("/api/v1/lookup", _params(message_id=message_id, job_id=job_id,
                                                                     rcpt=rcpt, limit=limit))
        part, early = settled(targets, answers)
        if early is not None:
            return early
        oks = merge.answered(answers)
        hub.withhold.learn(answers, rcpt)
        every = await off_loop(hub.withhold, merge.tagged(answers, "timelines"))
        items = merge.latest(every, limit) if rcpt and rcpt.strip() else every[:limit]
        first = merge.shown(oks)
        hint = None if items else next((b.get("hint") for b in oks if b.get("hint")), "nothing matched on any host")
        return await json_answer(HubLookupResponse, {
            "message_id": first.get("message_id"), "job_id": first.get("job_id"), "rcpt": first.get("rcpt"),
            "hint": hint, "timelines": items, "timelines_omitted": merge.omitted(oks) + len(every) - len(items),
            **part})

    @router.get("/replies", response_model=HubRepliesResponse, responses=_ERRORS,
                summary="Top remote replies behind deferrals and bounces, summed over every host")
    async def replies(
        vmta: Annotated[str | None, Query(description="VMTA(s), comma-separated; empty or All = every VMTA.")] = None,
        isp: Annotated[str | None, Query(description="ISP label value(s), comma-separated.")] = None,
        since: Annotated[str, Query(description="Start: epoch, ISO 8601 or e.g. `1h` ago.")] = "1h",
        until: Annotated[str | None, Query(description="End (exclusive), same forms; default now.")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Most reply texts returned."), DIGITS] = 10,
        pool: Annotated[str | None, Query(description="VMTA pool(s) as in the metrics' vmta_pool, comma-separated; "
                                          "empty or All = every pool.")] = None,
        host: Annotated[str | None, Query(description="Only these hosts (target names, as items' `host`; a "
                                          "dashboard's instance), comma-separated; empty or All = every host.")] = None,
    ) -> Any:
        # whole seconds, as a daemon resolves a relative window of /replies (its answer echoes it)
        params = _window(resolve_times(_params(vmta=vmta, pool=pool, isp=isp, since=since, until=until, limit=100),
                                       float(int(hub.clock()))))
        named = filter_values("host", host)
        targets = await hub.targets.current()
        unknown: list[HostAnswer] = []
        if named is not None:  # VMTA names repeat across hosts: an alert's board reads its own host's replies
            names = {t.name for t in targets}
            unknown = [HostAnswer(Target(n, ""), error=NOT_AMONG_TARGETS, away=True) for n in named if n not in names]
            targets = [t for t in targets if t.name in named]
            if not targets:  # only names no target has (a typo): a 404 on `host`, as /timelines answers
                raise BadRequest(404, f"unknown host {echoed(','.join(named))}", "host")
        answers = await hub.fanout.all(targets, "/api/v1/replies", params) + unknown
        without_route(answers)
        part, early = settled(targets, answers)
        if early is not None:
            return early
        merged = await off_loop(merge.merge_replies, answers, limit)
        return await json_answer(HubRepliesResponse, {**merged, **part})

    @router.get("/flows", response_model=HubFlowsResponse, responses=_ERRORS,
                summary="Sender domain -> VMTA -> ISP volumes summed over every host")
    async def flows(
        request: Request,
        since: Annotated[str, Query(description="Start (5-minute buckets): epoch, ISO 8601 or e.g. `1h` ago.")] = "1h",
        until: Annotated[str | None, Query(description="End (exclusive), same forms.")] = None,
        format: FormatParam = None,
    ) -> Any:
        params = _window(resolve_times(_params(since=since, until=until), hub.clock()))
        targets, answers = await hub.ask("/api/v1/flows", params)
        without_route(answers)
        part, early = settled(targets, answers)
        if early is not None:
            return early
        body = await off_loop(merge.merge_flows, answers)  # up to 10,000s of edges a host: off the loop
        body["since"] = body["since"] or since
        if want_text(request, format):
            return _text(await off_loop(render.flows, body), part)
        return await json_answer(HubFlowsResponse, {**body, **part})

    return router


def build_hub_routes(hub: Hub) -> APIRouter:
    """The /api/v1 router plus `//api/v1/...` redirected to `/api/v1/...`, as on a daemon (Grafana's
    Infinity data source joins a base URL ending in `/` and a query URL starting with `/`)."""
    top = APIRouter()
    top.include_router(build_hub_router(hub))
    redirect_double_slash(top)
    return top

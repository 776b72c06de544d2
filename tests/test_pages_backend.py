"""The pages' in-process backend over the real listener: what a page shows when the API it asks fails."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.http import build_app
from pages import build_pages_router, with_pages
from tests.conftest import write_config
from tests.listener import serving


async def test_an_api_route_that_raises_is_an_error_box_on_the_page_not_the_pages_own_500(tmp_path: Path, caplog):
    """httpx's ASGI transport re-raised the inner app's exception into the page handler: the page answered the
    API's JSON 500 (no page, no form) and the one failure was logged twice."""
    api = APIRouter()

    @api.get("/api/v1/search")
    def boom() -> None:
        raise RuntimeError("boom")

    config = load_config(write_config(tmp_path))
    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [with_pages(api)])
    caplog.set_level(logging.ERROR)
    async with serving(app, config) as (port, _), httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{port}/ui/")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert '<div class="err" id="error">500: internal error</div>' in r.text
    assert '<form class="search"' in r.text and "Traceback" not in r.text and "boom" not in r.text
    assert len([rec for rec in caplog.records if rec.exc_info]) == 1  # the API's own report, once


class Answers:
    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers

    async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        return self.answers[path]


async def test_a_scan_limited_empty_page_does_not_claim_nothing_matches(tmp_path: Path):
    """An empty page with `scan_limited` (the API stopped at its row budget, more may match) said "No timeline
    matches." above a Next page link."""
    body = {"items": [], "next_cursor": "WzEsMiwiYWIiXQ", "limit": 50, "scan_limited": True}
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Answers({"/api/v1/search": (200, body)})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/", params={"rcpt": "a@b.example", "job_id": "j"})
    assert r.status_code == 200
    assert "No timeline matches" not in r.text and 'id="scan-limited"' in r.text
    assert ('<form id="next" class="next" method="post" action="/ui/"><input type="hidden" name="rcpt" '
            'value="a@b.example"><input type="hidden" name="job_id" value="j"><input type="hidden" name="cursor" '
            'value="WzEsMiwiYWIiXQ"><button type="submit">Next page</button></form>') in r.text


async def test_a_busy_api_makes_a_503_page_that_says_when_to_retry(tmp_path: Path):
    """Every /api/v1 slot taken: the API answers 503 with Retry-After, and the page asking it answered 503 without
    one, so a browser or a monitoring probe had no hint when to come back."""
    import asyncio

    from correlator.api import ErrorRoute

    api = APIRouter(route_class=ErrorRoute)

    @api.get("/api/v1/search")
    def search() -> dict[str, Any]:
        return {"items": [], "next_cursor": None, "limit": 50, "scan_limited": False}

    config = load_config(write_config(tmp_path))
    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [with_pages(api)])
    app.state.api_slots = asyncio.Semaphore(0)  # held by requests that never finish: 503 after web.api_queue_timeout
    async with serving(app, config) as (port, _), httpx.AsyncClient(timeout=10) as client:
        direct = await client.get(f"http://127.0.0.1:{port}/api/v1/search")
        page = await client.get(f"http://127.0.0.1:{port}/ui/", params={"rcpt": "a@b.example"})
        app.state.api_slots = asyncio.Semaphore(1)
        ok = await client.get(f"http://127.0.0.1:{port}/ui/", params={"rcpt": "a@b.example"})
    assert (direct.status_code, direct.headers["retry-after"]) == (503, "2")  # the default 2 s
    assert (page.status_code, page.headers.get("retry-after")) == (503, "2")
    assert page.headers["content-type"].startswith("text/html") and "503: too many concurrent" in page.text
    assert ok.status_code == 200 and "retry-after" not in ok.headers


async def test_a_message_page_asks_for_a_bounded_page_and_renders_it_off_the_event_loop(tmp_path: Path,
                                                                                        monkeypatch):
    """A Message-Id of 1,200 recipients with 150 queue events each was one 66 MB page, decoded and rendered on the
    event loop (/metrics waited 5.5 s): the page asks for MESSAGE_PAGE recipients and builds them in a worker."""
    import threading

    from pages import views

    asked: list[Any] = []
    loop_thread: list[int] = []
    built_on: list[int] = []
    timeline = {"rcpt": "r@x.example", "outcome": "delivered", "events": [{"kind": "delivered", "t": 1.0}]}

    class Recorder:
        async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
            loop_thread.append(threading.get_ident())
            asked.append(params.get("limit"))
            return 200, {"message_id": "m@x.example", "recipients_total": 1200, "truncated": True,
                         "next_cursor": "WzFd", "recipients": [timeline] * params["limit"]}

    real = views.Views.timeline_section

    def section(self: Any, *args: Any) -> str:
        built_on.append(threading.get_ident())
        return real(self, *args)

    monkeypatch.setattr(views.Views, "timeline_section", section)
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Recorder()))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/messages/m@x.example")
    assert r.status_code == 200
    assert asked == [views.MESSAGE_PAGE] and views.MESSAGE_PAGE == 100
    assert r.text.count('class="events"') == 100 and "100 of 1200 recipients shown" in r.text
    assert len(built_on) == 100 and loop_thread[0] not in set(built_on)


def test_a_grafana_url_with_a_query_keeps_it_and_the_dashboard_path_goes_in_the_path() -> None:
    """`https://grafana.example/?orgId=2` is a common Grafana URL: the path was glued after the query."""
    from pages.views import grafana_link

    assert grafana_link("https://grafana.example/g/?orgId=2", "vmta-1", None, None) == (
        "https://grafana.example/g/d/watchtower-vmta/?orgId=2&amp;var-vmta=vmta-1")
    assert grafana_link("https://g.example/?orgId=2&kiosk", "v", 7200.0, None) == (  # a flag without a value stays
        "https://g.example/d/watchtower-vmta/?orgId=2&amp;kiosk&amp;var-vmta=v&amp;from=3600000&amp;to=10800000")
    assert grafana_link("http://localhost:3000", "v", None, "h:9469") == (
        "http://localhost:3000/d/watchtower-vmta/?var-vmta=v&amp;var-instance=h%3A9469")


async def test_a_search_result_links_to_its_own_timeline_and_its_message_apart(tmp_path: Path):
    """A row of a large message linked to the message page, which lists its first recipients only: the newest
    (search's first rows) were not on the page the link opened."""
    item = {"id": 7, "message_id": "big@x.example", "rcpt": "r1004@big.example", "job_id": "j", "outcome": "delivered",
            "first_seen": "2024-05-01T10:00:00Z"}
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Answers({"/api/v1/search": (200, {"items": [item]})})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/", params={"rcpt": "r1004@big.example"})
    assert r.status_code == 200
    assert '<td><a href="/ui/timelines/7">' in r.text
    assert '<td class=mono><a href="/ui/messages/big@x.example">big@x.example</a></td>' in r.text


async def test_a_message_page_shows_the_latest_events_of_each_recipient_and_links_the_rest(tmp_path: Path):
    """The latest events carry the outcome and the reports after it: a page showing a long timeline's first 50 hid
    them (and, with the store's own bound, showed a middle slice). Rows keep their number in the whole timeline,
    and what is left out is said above the table."""
    import re

    from pages import views

    events = [{"kind": "deferred", "time": f"2024-05-01T10:{i // 60:02d}:{i % 60:02d}Z", "ts": 1714557600.0 + i,
               "vmta": "v1"} for i in range(119)] + [{"kind": "delivered", "time": "2024-05-01T10:01:59Z",
                                                      "ts": 1714557719.0, "vmta": "v1"}]
    tl = {"id": 42, "rcpt": "r@x.example", "outcome": "delivered", "events": events, "events_omitted": 202,
          "vmta": "v1", "first_seen": "2024-04-30T10:00:00Z"}  # the older events left out began a day before
    body = {"message_id": "m@x.example", "recipients_total": 1, "recipients": [tl]}
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Answers({"/api/v1/messages/m@x.example": (200, body)})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/messages/m@x.example")
    assert r.status_code == 200
    assert r.text.count('<tr class="event"') == views.MESSAGE_EVENTS == 50
    numbers = [int(n) for n in re.findall(r'<tr class="event"[^>]*><td class=num>(\d+)</td>', r.text)]
    assert numbers == list(range(202 + 70 + 1, 202 + 120 + 1))  # the last 50 of 322, numbered as such
    assert 'data-kind="delivered"' in r.text
    notes = r.text.index("202 older events not listed"), r.text.index(
        '<a class="all-events" href="/ui/timelines/42">70 earlier events not shown here</a>')
    assert max(notes) < r.text.index('<table class="events">')
    header_link = re.search(r'VMTA <bdi><a class="grafana" href="([^"]+)"', r.text).group(1)
    assert f"from={int((1714471200 - 3600) * 1000)}" in header_link and f"to={int((1714557719 + 3600) * 1000)}" in header_link


async def test_a_page_the_hub_could_not_give_a_cursor_says_why_instead_of_ending_quietly(tmp_path: Path):
    """The hub keeps a page's items but hands out no cursor past its size bound (`next_cursor_problem`): the page
    showed no Next link and nothing else, as if the results had ended."""
    problem = "the cursor for the next page would exceed 12288 characters (1800 hosts): narrow the search"
    search = {"items": [], "next_cursor": None, "next_cursor_problem": problem, "limit": 50}
    message = {"message_id": "m@x.example", "recipients_total": 900, "truncated": True, "next_cursor": None,
               "next_cursor_problem": problem, "recipients": []}
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Answers({"/api/v1/search": (200, search),
                                                              "/api/v1/messages/m@x.example": (200, message)})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        pages = [await c.get(f"http://127.0.0.1:{port}/ui/", params={"job_id": "j"}),
                 await c.get(f"http://127.0.0.1:{port}/ui/messages/m@x.example")]
    for r in pages:
        assert r.status_code == 200
        assert f'<p class="warn next-problem">No next page: {problem}</p>' in r.text.replace("&#x27;", "'")
        assert 'id="next"' not in r.text and 'class="next"' not in r.text


async def test_the_timeline_page_says_how_many_older_sends_it_leaves_out(tmp_path: Path):
    tl = {"id": 3, "rcpt": "seed@gmail.com", "outcome": "delivered", "events": []}
    body = {"job_id": "jseed", "message_id": None, "rcpt": "seed@gmail.com", "timelines": [tl] * 3,
            "timelines_omitted": 7}
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Answers({"/api/v1/timeline": (200, body)})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/timeline", params={"rcpt": "seed@gmail.com", "job_id": "jseed"})
    assert r.status_code == 200 and r.text.count('<section class="rcpt"') == 3
    assert '<p class="meta">The latest 3 sends; 7 older not listed.</p>' in r.text


def test_a_reply_of_200k_characters_is_shown_cut_and_escaped() -> None:
    """Review 2026-12-05: a remote server's 200,000-character reply made a 205 KB page of one table cell."""
    from pages.views import SHOWN_TEXT, _reply

    diag = "smtp;421 <b>" + "A" * 200_000
    cell = _reply({"kind": "deferred", "dsn_status": "4.7.0", "dsn_diag": diag})
    shown = "smtp;421 &lt;b&gt;" + "A" * (SHOWN_TEXT - len("smtp;421 <b>"))
    assert cell == f"4.7.0<br>{shown}… ({len(diag) - SHOWN_TEXT:,} more characters: the API answers them)"
    assert _reply({"kind": "deferred", "dsn_diag": "smtp;421 <try later>"}) == "smtp;421 &lt;try later&gt;"


async def test_the_search_form_and_its_next_page_post_so_no_address_is_in_a_url(tmp_path: Path):
    """The search form was a GET: the recipient typed went into the URL (history, a proxy's log), and so did its
    Next page link (privacy review 2026-12-06). Both post; the page keeps the address typed in its form (a page is
    not kept: no-store), not a hashed form (on a hub, each host hashes with its own key, and the hub's cursor is
    tied to the filters as typed: a Next link with the hashed form answered 400)."""
    hashed = "hmac-sha256:" + "ab" * 32
    item = {"id": 7, "rcpt": hashed, "rcpt_hashed": True, "first_seen": "2024-05-01T10:00:00Z", "outcome": "bounced"}
    body = {"items": [item], "next_cursor": "WzEsMiwiYWIiXQ", "limit": 50, "scan_limited": False}
    asked: list[dict[str, Any]] = []

    class Recorded(Answers):
        async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
            asked.append(params)
            return await super().get(path, params)

    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [])
    app.include_router(build_pages_router(lambda _r: Recorded({"/api/v1/search": (200, body)})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.post(f"http://127.0.0.1:{port}/ui/", data={"rcpt": "alice.private@gmail.com", "job_id": ""})
        nxt = await c.post(f"http://127.0.0.1:{port}/ui/", data={"rcpt": "alice.private@gmail.com",
                                                                 "cursor": "WzEsMiwiYWIiXQ"})
        plain = await c.get(f"http://127.0.0.1:{port}/ui/")
    assert r.status_code == 200 and nxt.status_code == 200
    assert "alice.private%40" not in r.text and "href=\"/ui/?rcpt" not in r.text
    assert '<input name="rcpt" value="alice.private@gmail.com"' in r.text
    assert '<input type="hidden" name="cursor" value="WzEsMiwiYWIiXQ">' in r.text
    assert [a["rcpt"] for a in asked[:2]] == ["alice.private@gmail.com"] * 2 and asked[1]["cursor"] == "WzEsMiwiYWIiXQ"
    assert '<form class="search" method="post" action="/ui/"' in plain.text


def test_a_listener_that_mounts_the_pages_imports_no_http_client_until_a_page_is_asked(tmp_path: Path) -> None:
    """The pages ask the API through httpx's ASGI transport, imported at a page's first request: a daemon's
    listener (the API, the pages) starts without it (~30 ms of every `watchtower run` start with the correlator)."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "from prometheus_client import CollectorRegistry\n"
             "from fastapi import APIRouter\n"
             "from exporter.http import build_app\n"
             "from pages import with_pages\n"
             "build_app(CollectorRegistry(), lambda: {'ok': True}, [with_pages(APIRouter())])\n"
             "print('httpx' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parent.parent, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]


def test_a_shown_input_is_left_empty_rather_than_drawn_reordered_by_a_bidi_control() -> None:
    """Review 2026-12-07: a Message-Id holding U+202E filled the message page's search box raw, which Chromium drew
    `id\u202eabc@x` as `idx@cba` (the heading shows it made visible). A shown box takes a value only without controls,
    line separators or bidi controls; a hidden input keeps the exact value (a cursor, the filters)."""
    from pages.html import attr, input_value

    assert input_value("abc@mail.example") == "abc@mail.example"
    assert input_value('a"<b>') == "a&quot;&lt;b&gt;"
    assert input_value(None) == ""
    for odd in ("id\u202eabc@x", "job\u2066x", "a\u200eb", "x\x1b[31m", "l\u2028m", "t\tab"):
        assert input_value(odd) == "", odd
        assert attr(odd) == odd  # (hidden inputs and data- attributes: exact)
    # its review: invisible characters that reorder nothing stay (Persian's ZWNJ, an emoji's ZWJ)
    for fine in ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\U0001f469\u200d\U0001f4bb", "a\u200bb"):
        assert input_value(fine) == fine, fine

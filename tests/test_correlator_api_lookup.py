"""/api/v1/lookup answers the same Timeline objects as /timeline and /messages, and recipients with a `+`.

Two reported defects. /lookup typed its timelines `list[dict]`, so its events carried only the keys the reader set
(a `queued` event lacked 14 fields) while /timeline, through the Timeline model, gave every field (null when
absent), as docs/api.md promises for both. And `rcpt=bob+tag@gmail.com` in a query string reads `bob tag@gmail.com`
(a `+` is a space in URL form encoding): /timeline answered 404 naming `job_id`, /search an empty page, with nothing
telling the operator which address was looked up.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from correlator.models import Event
from exporter.config import CorrelatorConfig, load_config
from exporter.http import build_app
from tests.conftest import free_port
from tests.listener import serving
from tests.test_correlator_support import CORPUS, Harness, batch

PLUS = batch("/var/log/pmta/acct-2024-05-01-0002.csv", """
type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,header_Message-Id
d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,news@shop.example,Bob+Tag@Gmail.com,2.0.0 (success),smtp;250 ok,\
vmta1,J10,<m10@shop.example>
""")
"""One delivery to a plus-addressed recipient, in job J10 and Message-Id m10@shop.example."""


def _harness(tmp: Path, config: CorrelatorConfig | None = None) -> Harness:
    h = Harness(tmp, config)
    for b in (*CORPUS, PLUS):
        h.commit(b)
    return h


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = _harness(tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def hashed(tmp_path: Path) -> Harness:
    harness = _harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"))
    yield harness
    harness.close()


def _client(h: Harness) -> httpx.AsyncClient:
    """The daemon's real app (listener routes, auth and error handlers) in process."""
    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _error(r: httpx.Response, status: int, parameter: str | None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert (body["status"], body["parameter"]) == (status, parameter), body
    return body["error"]


# --- defect A: /lookup's timelines are /timeline's ---------------------------------------------------------

KEYS = [{"job_id": "J1", "rcpt": "bob@yahoo.com"}, {"message_id": "<m1@shop.example>", "rcpt": "alice@gmail.com"},
        {"message_id": "m3@shop.example", "rcpt": "carol@outlook.com"}, {"job_id": "J10", "rcpt": "bob+tag@gmail.com"}]


async def test_lookup_answers_the_timelines_of_timeline_field_for_field(h: Harness) -> None:
    kinds: set[str] = set()
    async with _client(h) as c:
        for key in KEYS:
            strict = await c.get("/api/v1/timeline", params=key)
            lookup = await c.get("/api/v1/lookup", params=key)
            assert (strict.status_code, lookup.status_code) == (200, 200), (key, strict.text, lookup.text)
            timelines = strict.json()["timelines"]
            assert timelines and lookup.json()["timelines"] == timelines, key
            for event in (e for t in timelines for e in t["events"]):
                assert list(event) == list(Event.model_fields), event  # every field, null when absent
                kinds.add(event["kind"])
    assert kinds == {"queued", "received", "deferred", "queue_deferred", "delivered", "bounced", "remote_status",
                     "remote_bounce", "complaint"}


async def test_lookup_events_carry_every_field_null_when_absent(h: Harness) -> None:
    """The shape reported: bob's `queued` event had 5 keys, his deferral no `queue`, his complaint no
    `response_class`."""
    async with _client(h) as c:
        body = (await c.get("/api/v1/lookup", params={"job_id": "J1", "rcpt": "bob@yahoo.com"})).json()
    queued, deferred, bounced, complaint = body["timelines"][0]["events"]
    assert queued == {"time": "2024-05-01T10:00:00Z", "ts": 1714557600.0, "kind": "queued", "record_type": None,
                      **dict.fromkeys(("attempt", "vmta", "vmta_pool", "source_ip", "dsn_action", "dsn_status",
                                       "dsn_diag", "dsn_mta", "bounce_category", "response_class", "queue",
                                       "feedback_type", "user_agent", "reporting_mta", "source"))}
    assert (deferred["queue"], deferred["feedback_type"], deferred["user_agent"], deferred["reporting_mta"]) \
        == (None, None, None, None)
    assert bounced["kind"] == "bounced" and "queue" in bounced and bounced["reporting_mta"] is None
    assert (complaint["kind"], complaint["queue"], complaint["response_class"], complaint["feedback_type"]) \
        == ("complaint", None, None, "abuse")


async def test_lookup_by_message_id_answers_the_recipients_of_messages(h: Harness) -> None:
    async with _client(h) as c:
        for mid in ("m1@shop.example", "m3@shop.example", "m10@shop.example"):
            message = await c.get(f"/api/v1/messages/{mid}")
            lookup = await c.get("/api/v1/lookup", params={"message_id": mid})
            assert message.status_code == 200 and message.json()["recipients"]
            assert lookup.json()["timelines"] == message.json()["recipients"], mid


async def test_openapi_types_the_lookup_timelines(h: Harness) -> None:
    app = FastAPI()
    app.include_router(h.sink.asgi_routes())
    spec = app.openapi()
    timelines = spec["components"]["schemas"]["LookupResponse"]["properties"]["timelines"]
    assert timelines["items"] == {"$ref": "#/components/schemas/Timeline"}
    assert timelines["type"] == "array"


# --- defect B: plus-addressed recipients ---------------------------------------------------------------------

async def test_a_plus_sent_as_a_space_is_a_400_naming_rcpt(h: Harness) -> None:
    """`+` unencoded in a query string is a space; no address has an unquoted one: say so, do not answer 404 on
    job_id (/timeline) or an empty page (/search)."""
    async with _client(h) as c:
        for url in ("/api/v1/timeline?job_id=J10&rcpt=bob+tag@gmail.com",
                    "/api/v1/timeline?message_id=m10@shop.example&rcpt=bob+tag@gmail.com",
                    "/api/v1/search?rcpt=bob+tag@gmail.com",
                    "/api/v1/lookup?job_id=J10&rcpt=bob+tag@gmail.com",
                    "/api/v1/lookup?rcpt=bob+tag@gmail.com",  # a recipient alone: was 200 "enter a Message-Id ..."
                    "/api/v1/timeline?job_id=J10&rcpt=Bob%20Tag@gmail.com"):
            error = _error(await c.get(url), 400, "rcpt")
            assert error == ("recipient 'bob tag@gmail.com' has a space: a `+` in a query string reads as a space, "
                             "send it as %2B (curl -G --data-urlencode 'rcpt=...')"), url


async def test_a_plus_sent_encoded_finds_the_timeline(h: Harness) -> None:
    async with _client(h) as c:
        encoded = await c.get("/api/v1/timeline?job_id=J10&rcpt=bob%2Btag@gmail.com")
        by_params = await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": "bob+tag@gmail.com"})
        found = await c.get("/api/v1/search?rcpt=bob%2Btag%40gmail.com")
    assert encoded.status_code == 200 and encoded.json() == by_params.json()
    assert encoded.json()["rcpt"] == "bob+tag@gmail.com" and encoded.json()["timelines"][0]["job_id"] == "J10"
    assert [i["job_id"] for i in found.json()["items"]] == ["J10"]


async def test_a_quoted_local_part_may_hold_a_space(h: Harness) -> None:
    """`"bob tag"@gmail.com` is an address: looked up (and not found), not refused."""
    async with _client(h) as c:
        r = await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": '"bob tag"@gmail.com'})
    assert _error(r, 404, "rcpt") == "no timeline for recipient '\"bob tag\"@gmail.com' in job 'J10'"


async def test_the_404_names_the_key_that_has_no_timeline(h: Harness) -> None:
    """The job (or Message-Id) is stored but not for this recipient: `rcpt` is the parameter at fault, and the
    recipient looked up is echoed; an unknown job or Message-Id names itself."""
    async with _client(h) as c:
        answers = [
            (await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": "Nobody@Gmail.com"}), "rcpt",
             "no timeline for recipient 'nobody@gmail.com' in job 'J10'"),
            (await c.get("/api/v1/timeline", params={"job_id": "J2", "rcpt": "bob@yahoo.com"}), "rcpt",
             "no timeline for recipient 'bob@yahoo.com' in job 'J2'"),
            (await c.get("/api/v1/timeline", params={"job_id": "J99", "rcpt": "bob@yahoo.com"}), "job_id",
             "no timeline for job 'J99'"),
            (await c.get("/api/v1/timeline", params={"message_id": "<m10@shop.example>", "rcpt": "x@gmail.com"}),
             "rcpt", "no timeline for recipient 'x@gmail.com' of Message-Id 'm10@shop.example'"),
            (await c.get("/api/v1/timeline", params={"message_id": "nope@x", "rcpt": "x@gmail.com"}), "message_id",
             "no timeline for Message-Id 'nope@x'"),
        ]
    for r, parameter, error in answers:
        assert _error(r, 404, parameter) == error


async def test_echoed_values_are_capped(h: Harness) -> None:
    long = "a" * 5000 + "@gmail.com"
    async with _client(h) as c:
        missing = await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": long})
        spaced = await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": "b " + long})
        no_job = await c.get("/api/v1/timeline", params={"job_id": "J" * 5000, "rcpt": "x@gmail.com"})
    assert _error(missing, 404, "rcpt") == f"no timeline for recipient {'a' * 64!r}... in job 'J10'"
    assert _error(spaced, 400, "rcpt").startswith(f"recipient {('b ' + 'a' * 62)!r}... has a space")
    assert _error(no_job, 404, "job_id") == f"no timeline for job {'J' * 64!r}..."


async def test_hashed_recipients_are_never_echoed(hashed: Harness) -> None:
    """With hash_recipients an error body is kept like any answer (proxies, Grafana): the local part is redacted
    whole (`redact` alone keeps what precedes a space, `bob [redacted]@`), the domain kept."""
    async with _client(hashed) as c:
        spaced = await c.get("/api/v1/timeline?job_id=J10&rcpt=bob+tag@gmail.com")
        missing = await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": "Nobody@Gmail.com"})
        no_at = await c.get("/api/v1/search", params={"rcpt": "nobody home@"})
        found = await c.get("/api/v1/timeline", params={"job_id": "J10", "rcpt": "bob+tag@gmail.com"})
    assert _error(spaced, 400, "rcpt").startswith("recipient '[redacted]@gmail.com' has a space: a `+` ")
    assert _error(missing, 404, "rcpt") == "no timeline for recipient '[redacted]@gmail.com' in job 'J10'"
    assert _error(no_at, 400, "rcpt").startswith("recipient '[redacted]@' has a space")
    assert found.status_code == 200 and found.json()["rcpt"].startswith("hmac-sha256:")
    for r in (spaced, missing, no_at):
        assert "bob" not in r.text and "tag" not in r.text and "nobody" not in r.text, r.text


# --- over TCP, as curl sends it ----------------------------------------------------------------------------------

def _listener_config(tmp: Path) -> Any:
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    path = tmp / "watchtower.yml"
    path.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp / "logs" / "acct-*.csv")]}], "state_dir": str(tmp / "state"),
        "listen": f"127.0.0.1:{free_port()}", "correlator": {"enabled": False}}))
    return load_config(path)


async def test_over_the_wire_plus_is_a_400_and_the_documented_curl_finds_it(h: Harness, tmp_path: Path) -> None:
    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()])
    async with serving(app, _listener_config(tmp_path / "listener")) as (port, _server):
        base = f"http://127.0.0.1:{port}/api/v1/timeline"
        async with httpx.AsyncClient(trust_env=False) as c:
            raw = await c.get(base + "?job_id=J10&rcpt=bob+tag@gmail.com")
            ok = await c.get(base, params={"job_id": "J10", "rcpt": "bob+tag@gmail.com"})
        curl = shutil.which("curl")
        assert curl is not None, "curl is missing: `make setup` installs it (the command docs/api.md documents)"
        documented = (await asyncio.to_thread(  # in a thread: the server answers on this event loop
            subprocess.run, [curl, "-s", "--noproxy", "*", "-G", "--data-urlencode", "rcpt=bob+tag@gmail.com",
                             base + "?job_id=J10"],  # docs/api.md's form (no proxy: the listener is local)
            capture_output=True, text=True, timeout=30, check=True)).stdout
    assert _error(raw, 400, "rcpt").startswith("recipient 'bob tag@gmail.com' has a space")
    assert ok.status_code == 200 and ok.json()["rcpt"] == "bob+tag@gmail.com"
    assert httpx.Response(200, content=documented).json() == ok.json()

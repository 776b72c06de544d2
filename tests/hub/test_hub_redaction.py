"""A target's error text is redacted as the hub's logs are before the hub quotes it (privacy review 2026-12-05).

A target answering `500 {"error": "backend failed for alice@gmail.com"}` put that address into every hub answer's
`missing_hosts[].error` and the /ui banner. No socket here: the hub's client is given a mock transport."""

from __future__ import annotations

from typing import Any

import httpx

from hub.fanout import Fanout, HostAnswer
from hub.merge import partial_fields, passed_on
from hub.targets import Target

LEAK = "zz.leak.canary60@gmail.com"


def _fanout(status: int, body: bytes) -> Fanout:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    return Fanout(httpx.AsyncClient(transport=transport), timeout=5)


async def test_a_5xx_error_text_is_redacted() -> None:
    fan = _fanout(500, b'{"error":"backend failed for ' + LEAK.encode() + b'"}')
    ans = await fan.one(Target("h1", "http://h1.example:9469"), "/api/v1/search", {})
    await fan.aclose()
    assert ans.error is not None and "canary60" not in ans.error, ans.error
    assert "[redacted]@gmail.com" in ans.error
    part = partial_fields([ans.target], [ans])
    assert "canary60" not in str(part), part


async def test_an_address_past_the_cut_is_not_left_half_shown() -> None:
    """Redacted before it is cut to 200 characters: a local part cut from its `@` would not be found after."""
    fan = _fanout(502, b"x" * 190 + b" " + LEAK.encode())
    ans = await fan.one(Target("h1", "http://h1.example:9469"), "/api/v1/search", {})
    await fan.aclose()
    assert ans.error is not None and "zz.leak" not in ans.error, ans.error


def test_a_refused_answer_is_redacted() -> None:
    ans = HostAnswer(Target("h1", "http://h1.example:9469"), status=409,
                     body={"error": f"no such thing for {LEAK}", "parameter": f"rcpt={LEAK}"})
    ans.refused()
    assert ans.error is not None and "canary60" not in ans.error, ans.error


def test_a_daemons_400_passed_on_is_redacted() -> None:
    body: dict[str, Any] = {"error": f"bad rcpt {LEAK}", "parameter": "rcpt", "status": 400}
    passed = passed_on(body)
    assert "canary60" not in passed["error"] and passed["parameter"] == "rcpt", passed

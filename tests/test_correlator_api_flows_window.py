"""/api/v1/flows with `until` not after `since` is a 400 on `since`, as /replies answers (docs/api.md): the check ran
on the bounds rounded to 5-minute buckets, so `since=11:21:07&until=11:20:08` (both in the 11:20 bucket, rounded to
11:20-11:25) read that bucket and answered 200 with its nodes (review 2026-12-06)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_correlator_support import CORPUS, Harness

CLOCK = 1714645267.0  # 2024-05-02T10:21:07Z, after the corpus


@pytest.mark.parametrize(("since", "until"), [
    ("2024-05-01T10:21:07Z", "2024-05-01T10:20:08Z"),  # until before since, in the same bucket
    ("2024-05-01T10:21:07Z", "2024-05-01T10:21:07Z"),  # equal
    ("2024-05-01T10:24:00Z", "2024-05-01T10:21:00Z"),
    ("2024-05-01T12:00:00Z", "2024-05-01T10:00:00Z"),  # other buckets
    ("30m", "1h"),  # relative: 30 minutes ago is after an hour ago
])
async def test_flows_until_not_after_since_is_a_400_naming_since(tmp_path: Path, since: str, until: str) -> None:
    h = Harness(tmp_path, clock=lambda: CLOCK)
    for b in CORPUS:
        h.commit(b)
    try:
        async with h.client() as c:
            r = await c.get("/api/v1/flows", params={"since": since, "until": until})
            page = await c.get("/ui/flows", params={"since": since, "until": until})
    finally:
        h.close()
    assert (r.status_code, r.json()) == (400, {"error": "since must be before until", "parameter": "since",
                                               "status": 400})
    assert page.status_code == 400, page.text[:300]


async def test_flows_within_one_bucket_still_read_it(tmp_path: Path) -> None:
    """since before until inside one bucket still reads that bucket (its bounds echoed)."""
    h = Harness(tmp_path, clock=lambda: CLOCK)
    for b in CORPUS:
        h.commit(b)
    try:
        async with h.client() as c:
            r = await c.get("/api/v1/flows", params={"since": "2024-05-01T10:20:08Z", "until": "2024-05-01T10:21:07Z"})
    finally:
        h.close()
    assert r.status_code == 200, r.text
    assert (r.json()["since"], r.json()["until"]) == ("2024-05-01T10:20:00Z", "2024-05-01T10:25:00Z")
    assert r.json()["nodes"]

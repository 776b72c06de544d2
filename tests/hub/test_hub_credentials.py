"""Credentials towards the daemons live in hub.auth (read from files), never in a target URL: a URL is shown in
every answer (`missing_hosts[].url`) and logged, so one with a password in it is refused at start, and a
discovered one is read without it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from tests.hub.fakes import FakeHosts, Reply, Request, cursor_text, running_hub, search_page, startup_problems, summary

HINT = "give them in hub.auth (username and password_file, or bearer_token_file), not in the URL"


def test_a_target_url_with_a_password_is_refused_at_start_naming_the_key_and_hub_auth(tmp_path: Path):
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": [
        "http://a:9469", "http://hub:s3cret@b:9469", {"url": "https://hub:0ther@c:9469", "name": "c"}]}}))
    assert startup_problems(cfg) == [
        f"hub.targets.1: http://***@b:9469 carries a user name or password: {HINT}",
        f"hub.targets.2.url: https://***@c:9469 carries a user name or password: {HINT}",
    ]


async def test_no_url_shown_logged_or_put_in_a_cursor_carries_a_password(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture):
    """Discovered targets: a file_sd entry with a password is refused (the file's last good list stays, here none);
    a Prometheus scrapeUrl with one is asked without it (and with hub.auth). The Prometheus URL may carry its own
    credentials (the only way to give them): they are never logged."""
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["hub:s3cret@127.0.0.1:1"]}]))
    active = [{"labels": {"job": "wt", "instance": "down"}, "scrapeUrl": "http://hub:s3cret@127.0.0.1:1/metrics"}]
    items = [summary(id=i, first_seen=f"2026-01-01T00:00:0{9 - i}Z") for i in range(3)]

    def answer(req: Request) -> Reply:
        if req.host == "prom":
            return Reply(body={"status": "success", "data": {"activeTargets": active}})
        return search_page(items[:int(req.params["limit"])], next_cursor="more")

    caplog.set_level(logging.WARNING, logger="hub.targets")
    async with FakeHosts(answer) as fleet:
        hub_cfg = {"targets": [{"url": fleet.url("a"), "name": "a"}], "file_sd": [str(sd)],
                   "prometheus": {"url": fleet.url("prom").replace("//", "//prom:pr0m@"), "job": "wt"}}
        async with running_hub(hub_cfg) as hub:
            r = await hub.get("/api/v1/search", params={"limit": 1})
        broken = {**hub_cfg, "prometheus": {"url": "http://prom:pr0m@127.0.0.1:1", "job": "wt"}}
        async with running_hub(broken) as hub:
            await hub.get("/api/v1/search", params={"limit": 1})
    body = r.json()
    assert (r.status_code, body["hosts"], [(m["host"], m["url"]) for m in body["missing_hosts"]]) == (
        200, ["a", "down"], [("down", "http://127.0.0.1:1")])
    assert "s3cret" not in r.text and "s3cret" not in cursor_text(body["next_cursor"])
    assert {rec.getMessage() for rec in caplog.records if str(sd) in rec.getMessage()} == {  # (once per hub)
        f"cannot read targets from {sd} (keeping the last list): {sd}: group 0: target ***@127.0.0.1:1 carries a "
        f"user name or password: {HINT}"}
    assert "s3cret" not in caplog.text and "pr0m" not in caplog.text
    assert "prometheus http://***@127.0.0.1:1 job wt" in caplog.text


@pytest.mark.parametrize("url", ["http://hub:s3cr/et@pmta-1:9469", "http://hub:s3cr?et@pmta-1:9469",
                                 "http://hub:s3cr#et@pmta-1:9469", "http://admin/s3cret@pmta-1:9469"])
def test_a_password_holding_a_url_delimiter_is_refused_and_never_shown(tmp_path: Path, url: str):
    """Generated passwords hold `/`, `?` or `#`; unencoded, they end the URL's host part, so urlsplit saw no user and
    the start-up check printed the whole URL. Anything before the last `@` of the part before the query is masked."""
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": [url]}}))
    assert startup_problems(cfg) == [f"hub.targets.0: http://***@pmta-1:9469 carries a user name or password: {HINT}"]
    cfg.write_text(yaml.safe_dump({"hub": {"prometheus": {"url": url, "job": "pmta"}}}))
    problems = startup_problems(cfg)
    assert problems and not [p for p in problems if "s3cr" in p], problems


def test_the_prometheus_url_keeps_an_at_sign_of_its_query_and_masks_its_credentials():
    from hub.config import without_credentials

    assert without_credentials("http://prom:9090/x?who=a@b") == "http://prom:9090/x?who=a@b"
    assert without_credentials("http://u:p/q@prom:9090/x?who=a@b", mask="") == "http://prom:9090/x?who=a@b"
    assert without_credentials("http://u:p@prom:9090") == "http://***@prom:9090"

"""Text every output can carry: a JSON escape can name a lone surrogate or NUL, which no label, log line or SQLite
row holds. Both JSON edges (the accounting form, the management API) repair it the same way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import TOO_DEEP, PmtaApiConfig
from exporter.exposition import render_sync
from exporter.pmta_api import PmtaApiClient
from exporter.queues import QueuePoller
from exporter.textrepair import SURROGATE_PROBLEM, repair_text, repair_tree
from tests.conftest import REPO
from tests.test_queues import gauges


def test_repair_text_and_tree():
    assert repair_text("v\ud800x\x00y") == ("v\ufffdxy", True)
    assert repair_text("v\x00") == ("v", False)
    assert repair_text("ok \U0001F600") == ("ok \U0001F600", False)  # a pair is one character: kept
    tree = {"a\udc00": ["x\x00", {"k": "\ud83d"}, 3, None]}
    assert repair_tree(tree) == {"a\ufffd": ["x", {"k": "\ufffd"}, 3, None]}


async def test_escaped_surrogates_and_nuls_in_a_json_answer_become_labels_every_output_can_carry() -> None:
    """A JSON answer can escape what no UTF-8 label holds: a lone surrogate (`\\ud800`) reached a vmta label and
    every /metrics render failed (UnicodeEncodeError: 500 at each scrape); a NUL reached the label raw. As in the
    JSON accounting form: the surrogate becomes U+FFFD, the NUL is dropped."""
    body = (b'{"status": "success", "data": {"queues": ['
            b'{"name": "gmail.com/v\\ud800", "rcp": 3}, {"name": "gmail.com/v\\u0000x", "rcp": 4},'
            b'{"name": "gm\\udc00ail.com/v2", "rcp": 5}]}}')
    status = b'{"status": "success", "data": {"status": {"queue": {"smtp": {"rcp": 12}}}}}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=status if request.url.path == "/status" else body)

    registry = CollectorRegistry()
    poller = QueuePoller(PmtaApiConfig(url="http://pmta", format="json", per_vmta_queries=False), registry,
                         lambda d: {"gmail.com": "gmail"}.get(d, "other"))
    async with PmtaApiClient(poller.config, transport=httpx.MockTransport(handler)) as client:
        assert await poller.poll_once(client)
    assert {k: v[0] for k, v in gauges(registry).items()} == {
        ("v\ufffd", "gmail"): 3, ("vx", "gmail"): 4, ("v2", "other"): 5}
    page = render_sync(registry).decode()
    assert 'pmta_queue_recipients{isp="gmail",vmta="v\ufffd"} 3.0' in page


def test_a_config_with_an_escaped_lone_surrogate_is_refused_naming_the_key(tmp_path: Path):
    """`name: "acct\\ud800"` passed check-config, then a oneshot printed nothing (UnicodeEncodeError at the render)
    and a daemon would 500 every scrape: the label cannot be encoded. Refused up front, naming the key."""
    (tmp_path / "acct-1.csv").write_text("type,timeLogged,vmta\nd,2024-05-01 10:00:00+0000,v1\n")
    config = tmp_path / "c.yml"
    config.write_text(f'sources:\n- name: "acct\\ud800"\n  paths: ["{tmp_path}/acct-*.csv"]\n'
                      f'state_dir: {tmp_path}/state\n')
    for command in ("check-config", "oneshot"):
        args = [command, str(config)] if command == "check-config" else [command, "--config", str(config)]
        run = subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 2, (command, run.stderr)
        assert run.stdout == "" and "Traceback" not in run.stderr
        assert run.stderr == f"{config}: invalid configuration\n  sources.0.name: {SURROGATE_PROBLEM}\n"



def test_a_file_sd_target_with_an_escaped_lone_surrogate_is_refused_naming_file_and_entry(tmp_path: Path):
    """The hub names its targets in every answer (`missing_hosts`, `host`): one it cannot encode would fail them."""
    from hub.targets import read_file_sd

    sd = tmp_path / "targets.yml"
    sd.write_text('- targets: ["pmta-01:9469", "pmta\\ud800:9469"]\n')
    with pytest.raises(ValueError) as err:
        read_file_sd(sd, "http")
    assert str(err.value) == f"{sd}: 0.targets.1: {SURROGATE_PROBLEM}"
    sd.write_text('- targets: ["pmta-01:9469", "pmta-\\u00e9:9469"]\n')  # an escape of a real character is fine
    assert [t.name for t in read_file_sd(sd, "http")] == ["pmta-01:9469", "pmta-\u00e9:9469"]


def test_a_config_nested_past_the_recursion_limit_is_one_line_not_a_traceback(tmp_path: Path):
    """PyYAML's pure-Python composer recurses once per level: `sources: [[[...]]]` 50,000 deep printed a
    RecursionError traceback of 2,800 lines from check-config. Now one problem line, exit 2."""
    config = tmp_path / "deep.yml"
    config.write_text("sources: " + "[" * 50_000 + "]" * 50_000 + "\n")
    run = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr == f"{config}: invalid configuration\n  not valid YAML: {TOO_DEEP}\n"


@pytest.mark.parametrize("suffix", [".yml", ".json"])
def test_a_file_sd_nested_past_the_recursion_limit_is_a_read_error(tmp_path: Path, suffix: str):
    """The hub keeps its last list on a file it cannot read (a ValueError); a RecursionError escaped that."""
    from hub.targets import read_file_sd

    sd = tmp_path / f"targets{suffix}"
    sd.write_text("[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ValueError, match=f"^{re.escape(f'{sd}: {TOO_DEEP}')}$"):
        read_file_sd(sd, "http")

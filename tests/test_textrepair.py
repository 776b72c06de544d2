"""Text every output can carry: a JSON escape can name a lone surrogate or NUL, which no label, log line or SQLite
row holds. Both JSON edges (the accounting form, the management API) repair it the same way."""

from __future__ import annotations

import re
import subprocess
import sys
import tracemalloc
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
from tests.test_simulator_scenarios import run_limited


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


EXPANDS = ("aliases expand this to more than 1,000,000 values more than the file writes (each `*alias` stands for "
           "all its anchor holds; 10 characters of a text count as one value)")


def _aliases(levels: int, copies: int, leaf: str) -> str:
    """YAML of `levels` lists, each holding `copies` aliases of the one before: a few hundred bytes that
    expand to copies**levels strings."""
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f'{names[0]}: &{names[0]} [{", ".join([leaf] * copies)}]']
    lines += [f'{n}: &{n} [{", ".join([f"*{p}"] * copies)}]' for p, n in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + "\n"


def test_surrogate_paths_walks_a_container_shared_by_aliases_once_and_a_cycle_ends():
    """A YAML alias shares its anchor's container: the walk followed every path to it (copies**levels strings for
    a few hundred bytes), and a container holding its own alias (`&a [*a]`) recursed until a RecursionError. Each
    container is now looked at once, named at its first path (the anchor: the place to correct)."""
    import yaml

    from exporter.textrepair import surrogate_paths

    shared = yaml.safe_load(_aliases(3, 3, '"ok", "b\\ud800"'))
    assert shared["c"][2][1] is shared["a"]
    assert surrogate_paths(shared) == ["a.1", "a.3", "a.5"]
    cycle = yaml.safe_load('top: &t ["ok", {"k\\udc00": *t, "v": ["b\\ud800"]}]\n')
    assert surrogate_paths(cycle) == ["top.1.k\udc00", "top.1.v.0"]
    plain = {"sources": [{"name": "a\ud800", "paths": ["x", "y\udfff"]}], "k\udc00": {"z": "ok"}, "n": 3}
    assert surrogate_paths(plain) == ["sources.0.name", "sources.0.paths.1", "k\udc00"]
    equal_not_shared = {"a": ["x\ud800"], "b": ["x\ud800"]}  # equal lists, two containers: both named
    assert surrogate_paths(equal_not_shared) == ["a.0", "b.0"]


def test_a_config_of_nested_aliases_or_an_alias_cycle_is_checked_at_once(tmp_path: Path):
    """check-config on 880 bytes of aliases 8 levels deep ran for 30+ s in silence (10x per extra level); an alias
    of a list inside itself printed a RecursionError traceback. Now both are answered at once, one line a problem
    (12 levels here: an unbounded walk would never answer)."""
    deep = tmp_path / "anchors.yml"
    deep.write_text(_aliases(12, 10, "x") + f"sources:\n  - paths: [{tmp_path}/acct-*.csv]\nstate_dir: {tmp_path}/st\n")
    cycle = tmp_path / "cycle.yml"
    cycle.write_text(f"a: &a [1, *a]\nsources:\n  - name: acct\n    paths: &p [/logs/acct-*.csv, *p]\n"
                     f"state_dir: {tmp_path}/st\n")
    for config, problems in ((deep, [f"line 6, column 4: not valid YAML: {EXPANDS}"]),  # (where the repeats pass
                             # the bound: refused before anything is built, review 2026-12-07)
                             (cycle, ["line 1, column 4: not valid YAML: an alias refers to a mapping or list that holds "
                                       "it (a config is a tree of values)"])):
        run = run_limited("exporter", "check-config", str(config))  # 2 GiB, a 60 s hang guard
        assert run.returncode == 2 and run.stdout == "" and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert run.stderr == f"{config}: invalid configuration\n" + "".join(f"  {p}\n" for p in problems)


def test_a_checked_key_given_a_value_nested_aliases_expand_is_named_at_once(tmp_path: Path):
    """`paths: *h` of 8 levels of aliases: the error message wrote the whole expanded value (10^8 items) out before
    cutting it to 80 characters: 6-7 s, 10x per extra level (12 levels here: written out, it would not fit in
    memory)."""
    config = tmp_path / "paths.yml"
    config.write_text(_aliases(5, 10, "x") + "sources:\n  - name: acct\n    paths: *e\n"  # 10^5 values: within
                      f"state_dir: {tmp_path}/st\n")  # the bound of what aliases may add (MAX_ALIASED_VALUES)
    run = run_limited("exporter", "check-config", str(config))  # 2 GiB, a 60 s hang guard
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    first = run.stderr.splitlines()[1]
    assert first.startswith("  line 4: sources.0.paths.0: expected a valid string, got [[[[") and len(first) < 170, first
    config.write_text(_aliases(12, 10, "x") + "sources:\n  - name: acct\n    paths: *l\n"  # 10^12: refused
                      f"state_dir: {tmp_path}/st\n")
    run = run_limited("exporter", "check-config", str(config))
    assert run.returncode == 2 and run.stderr.splitlines()[1:] == [f"  line 6, column 4: not valid YAML: {EXPANDS}"], \
        run.stderr[-2000:]


def test_an_isp_table_or_file_sd_entry_that_nested_aliases_expand_is_named_at_once(tmp_path: Path):
    """`str()` of an aliased entry wrote 10^8 items out before the entry was found not to be a name (the ISP table, a
    hub's file_sd file)."""
    from exporter.classify.isp import IspClassifier
    from hub.targets import ALIAS_REFUSED, read_file_sd

    table, within = tmp_path / "isp.yaml", tmp_path / "isp5.yaml"
    for path, names in ((table, "abcdefgh"), (within, "abcde")):  # 10^8 values, and 10^5 (MAX_ALIASED_VALUES)
        nested = "".join(f"      - &{n} [{', '.join([f'*{p}' if p else 'x'] * 10)}]\n"
                         for p, n in zip(["", *names], names, strict=False))
        path.write_text('version: 1\ndate: "2026-01-01"\nproviders:\n  gmail:\n    note:\n' + nested
                        + f"    domains: [*{names[-1]}]\n")
    sd = tmp_path / "sd.yml"
    sd.write_text("- targets: &t [" + ", ".join(["[a, b, c, d, e, f, g, h, i, j]"] * 10) + "]\n"
                  "- targets: [*t, *t, *t, *t, *t, *t, *t, *t, *t, *t]\n")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as refused:
            IspClassifier.load(table)
        with pytest.raises(ValueError) as isp:
            IspClassifier.load(within)
        with pytest.raises(ValueError) as targets:
            read_file_sd(sd, "http")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # written out, the entry's 10^8 items take hundreds of MB
    assert str(refused.value) == f"{table}: line 11, column 9: not valid YAML: {EXPANDS}"  # before it is built
    assert "bad entry [[[[" in str(isp.value) and len(str(isp.value)) < 300, str(isp.value)[:300]
    assert str(targets.value) == f"{sd}: line 2: " + ALIAS_REFUSED.format(anchor="t")  # refused before expanding

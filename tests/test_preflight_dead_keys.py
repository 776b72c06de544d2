"""Keys accepted but without effect (review: `correlator: {enabled: false, retention: 1d, max_flow_senders: 5}`, or
`pmta: {api_key: k, verify_tls: false, format: json}` without `pmta.url`: `check-config` said ok). One WARNING per
section names the keys the file sets that do nothing, and why; `correlator.hash_recipients` is not one of them with
the correlator off: it still redacts addresses in the log and /healthz (exporter/logsetup.py, exporter/redact.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import preflight
from exporter.cli import main
from exporter.config import config_from_dict

CORRELATOR_OFF = ("correlator.enabled is false: {keys} {verb} no effect (they configure the correlator's timeline "
                  "store, its /api/v1 routes and /ui pages, none of which runs); remove them, or set "
                  "correlator.enabled: true")
NO_URL = ("pmta.url is not set: {keys} {verb} no effect (they configure the polls of PMTA's management API, which "
          "run only with pmta.url; without it there are no queue gauges); set pmta.url, or remove them")


def _config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    return {"sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}],
            "state_dir": str(tmp_path / "state"), "listen": "127.0.0.1:36872", **sections}


def _said(tmp_path: Path, **sections: Any) -> list[str]:
    words = preflight.run_warnings(config_from_dict(_config(tmp_path, **sections)))
    return [w for w in words if w.startswith(("correlator.enabled is false", "pmta.url is not set"))]


def test_check_config_names_the_dead_keys_of_each_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "acct-1.csv").write_text("type\n")
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump(_config(
        tmp_path, correlator={"enabled": False, "hash_recipients": True, "retention": "1d", "max_flow_senders": 5},
        pmta={"api_key": "k", "verify_tls": False, "format": "json"})))
    path.chmod(0o600)  # (an inline api_key in a file every user reads is warned of too)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: warning: " + NO_URL.format(keys="api_key, verify_tls, format", verb="have"),
        f"{path}: warning: " + CORRELATOR_OFF.format(keys="retention, max_flow_senders", verb="have"),
    ]


def test_every_dead_correlator_key_is_named_and_hash_recipients_never(tmp_path: Path) -> None:
    correlator = {"enabled": False, "retention": "1d", "max_db_size": "1GiB", "fallback_window": 0,
                  "hash_recipients": True, "hmac_key_file": str(tmp_path / "k"), "max_flow_senders": 5,
                  "worker": "thread", "grafana_url": "http://grafana:3000"}
    assert _said(tmp_path, correlator=correlator) == [CORRELATOR_OFF.format(
        keys="retention, max_db_size, fallback_window, hmac_key_file, max_flow_senders, worker, grafana_url",
        verb="have")]
    assert _said(tmp_path, correlator={"enabled": False, "worker": "thread"}) == [
        CORRELATOR_OFF.format(keys="worker", verb="has")]


def test_every_dead_pmta_key_is_named(tmp_path: Path) -> None:
    pmta = {"poll_interval": 5, "timeout": 1, "poll_deadline": 2, "api_key": "k", "username": "u",
            "password": "p", "verify_tls": False, "format": "json", "per_vmta_queries": False, "max_backoff": 0}
    assert _said(tmp_path, pmta=pmta) == [NO_URL.format(
        keys="poll_interval, timeout, poll_deadline, api_key, username, password, verify_tls, format, "
             "per_vmta_queries, max_backoff", verb="have")]


@pytest.mark.parametrize("sections", [
    {},  # defaults only: nothing set
    {"correlator": {"enabled": False}},
    {"correlator": {"enabled": False, "hash_recipients": True}},  # redacts the log: not dead
    {"correlator": {"retention": "1d", "worker": "thread"}},  # enabled by default
    {"correlator": {"enabled": True, "max_flow_senders": 5}},
    {"pmta": {"url": "http://127.0.0.1:36873", "api_key": "k", "format": "json"}},
    {"pmta": None},  # `pmta:` with its keys commented out
    {"pmta": {"url": None}},
])
def test_nothing_is_said_of_keys_that_act_or_were_not_set(tmp_path: Path, sections: dict[str, Any]) -> None:
    assert _said(tmp_path, **sections) == []


# --- secret files of the poller without pmta.url: never read, so never a reason to refuse the start -----------------

@pytest.mark.parametrize(("key", "extra"), [("password_file", {"username": "mon"}), ("api_key_file", {}),
                                            ("ca_file", {})])
def test_a_missing_pmta_file_without_url_is_warned_not_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, extra: dict[str, Any]) -> None:
    """No pmta.url: no poller runs (exporter.daemon starts QueuePoller only with it), so the poller's files are never
    read. A stale path left from a poller turned off refused the start (exit 2, `does not exist`); it has no effect,
    and check-config says so as of every other such key."""
    (tmp_path / "acct-1.csv").write_text("type\n")
    gone = tmp_path / "gone"
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump(_config(tmp_path, pmta={key: str(gone), **extra})))
    path.chmod(0o600)
    assert preflight.problems(config_from_dict(_config(tmp_path, pmta={key: str(gone), **extra}))) == []
    assert main(["check-config", str(path)]) == 0
    keys = ", ".join([*extra, key])
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: warning: " + NO_URL.format(keys=keys, verb="has" if not extra else "have")]


@pytest.mark.parametrize("key", ["password_file", "api_key_file", "ca_file"])
def test_a_missing_pmta_file_with_url_is_still_refused(tmp_path: Path, key: str) -> None:
    gone = tmp_path / "gone"
    pmta = {"url": "http://127.0.0.1:27999", key: str(gone), **({"username": "mon"} if key == "password_file" else {})}
    assert preflight.problems(config_from_dict(_config(tmp_path, pmta=pmta))) == [
        f"pmta.{key}: {gone} does not exist"]

"""Two sources whose globs take the same files, each with its own `records` filter (review: `sources: [{name: dl,
paths: [/logs/acct-*.csv], records: [d]}, {name: bo, paths: [/logs/acct-*.csv], records: [b]}]`). The tailer reads
such a file for the first source listed only: every `b` record was skipped (`watchtower_records_skipped_total{
source="dl",type="b"}`, no `pmta_bounced_total`) while `check-config` exited 0 with a warning. Losing record types
that way is a config error now (exit 2, in `check-config`, `run` and `oneshot`); an overlap that loses nothing (the
later source keeps no type the first does not, or both keep every type) stays a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import preflight
from exporter.cli import main
from exporter.config import config_from_dict
from tests.conftest import REPO

LISTEN = "127.0.0.1:36871"
"""Never bound: check-config binds port 0, and `run`/`oneshot` stop at the preflight before binding."""


def _write(tmp_path: Path, sources: list[dict[str, Any]]) -> Path:
    cfg = {"sources": sources, "state_dir": str(tmp_path / "state"), "listen": LISTEN,
           "correlator": {"enabled": False}}
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _logs(tmp_path: Path, *names: str) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    for name in names:
        (logs / name).write_text("type,timeLogged\n")
    return logs


def _lines(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines()[1:]]


def test_one_glob_for_two_record_filters_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pattern = str(_logs(tmp_path, "acct-1.csv") / "acct-*.csv")
    config = _write(tmp_path, [{"name": "dl", "paths": [pattern], "records": ["d"]},
                               {"name": "bo", "paths": [pattern], "records": ["b"]}])
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"{config}: invalid configuration"
    assert _lines(err) == [
        f"sources.1.paths.0: {pattern!r} is also sources.0.paths.0 (source dl): a file both match is read for dl "
        "only, so the records of type b that bo asks for are never read: make them one source with records: [d, b]"]


def test_the_error_needs_no_file_to_match_yet(tmp_path: Path) -> None:
    pattern = str(tmp_path / "logs" / "acct-*.csv")  # no directory even: identical globs prove it
    config = config_from_dict({"sources": [{"name": "dl", "paths": [pattern], "records": ["delivery"]},
                                           {"name": "bo", "paths": [pattern], "records": ["bounce", "transient"]}],
                               "state_dir": str(tmp_path / "state"), "listen": LISTEN})
    assert [p for p in preflight.problems(config) if p.startswith("sources.")] == [
        f"sources.1.paths.0: {pattern!r} is also sources.0.paths.0 (source dl): a file both match is read for dl "
        "only, so the records of types b, t that bo asks for are never read: make them one source with records: "
        "[d, b, t]"]
    assert not [w for w in preflight.run_warnings(config) if w.startswith("sources.")]


def test_a_later_source_of_every_type_loses_the_types_the_first_skips(tmp_path: Path) -> None:
    pattern = str(tmp_path / "logs" / "acct-*.csv")
    config = config_from_dict({"sources": [{"name": "dl", "paths": [pattern], "records": ["d", "b"]},
                                           {"name": "all", "paths": [pattern]}],
                               "state_dir": str(tmp_path / "state"), "listen": LISTEN})
    assert [p for p in preflight.problems(config) if p.startswith("sources.")] == [
        f"sources.1.paths.0: {pattern!r} is also sources.0.paths.0 (source dl): a file both match is read for dl "
        "only, so the records of types t, tq, f, rb, rs, r that all asks for are never read: make them one source "
        "without records (every type)"]


def test_a_file_two_different_globs_match_is_a_warning_naming_the_types_it_may_lose(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Patterns that share some files only (`*.csv` beside `acct-*.csv`): what the shared files hold is not known (a
    catch-all second source over PMTA's acct file, which holds only d and b, loses nothing), and a refusal would
    depend on the files present at a start (a regression review: a working config refused, a restart failing)."""
    logs = _logs(tmp_path, "acct-1.csv", "other.csv")
    config = _write(tmp_path, [{"name": "dl", "paths": [str(logs / "acct-*.csv")], "records": ["d"]},
                               {"name": "bo", "paths": [str(logs / "*.csv")], "records": ["b"]}])
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr()
    assert (f"warning: sources.1.paths.0: {str(logs / '*.csv')!r} also matches {logs / 'acct-1.csv'}, a file of "
            f"sources.0.paths.0 {str(logs / 'acct-*.csv')!r} (source dl): such a file is read for dl only, so any "
            "records of type b in it, which bo asks for, are never read: make them one source with records: [d, b], "
            "or narrow one of the patterns") in out.err + out.out


@pytest.mark.parametrize("command", ["run", "oneshot"])
def test_run_and_oneshot_refuse_it_too(tmp_path: Path, command: str) -> None:
    """In a process of its own, bounded: before the fix `run` started and followed the files for dl alone."""
    pattern = str(_logs(tmp_path, "acct-1.csv") / "acct-*.csv")
    config = _write(tmp_path, [{"name": "dl", "paths": [pattern], "records": ["d"]},
                               {"name": "bo", "paths": [pattern], "records": ["b"]}])
    try:
        proc = subprocess.run([sys.executable, "-m", "exporter", command, "--config", str(config)], cwd=REPO,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # (killed by subprocess.run)
        raise AssertionError(f"{command} did not stop at the preflight") from exc
    assert proc.returncode == 2, proc.stderr
    assert (f"  sources.1.paths.0: {pattern!r} is also sources.0.paths.0 (source dl): a file both match is read for "
            "dl only, so the records of type b that bo asks for are never read: make them one source with records: "
            "[d, b]\n") in proc.stderr, proc.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(("first", "later"), [
    (["d", "b"], ["b"]),  # the later source's types are a subset of the first's
    (None, ["b"]),  # the first keeps every type
    (None, None),  # both keep every type
    (["b", "d"], ["delivery", "bounce"]),  # the same types, by alias
])
def test_an_overlap_that_loses_no_type_stays_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       first: list[str] | None, later: list[str] | None) -> None:
    pattern = str(_logs(tmp_path, "acct-1.csv") / "acct-*.csv")
    sources: list[dict[str, Any]] = [{"name": "dl", "paths": [pattern]}, {"name": "bo", "paths": [pattern]}]
    for source, records in zip(sources, (first, later), strict=True):
        if records is not None:
            source["records"] = records
    config = _write(tmp_path, sources)
    assert main(["check-config", str(config)]) == 0
    assert capsys.readouterr().err == (
        f"{config}: warning: sources.1.paths.0: {pattern!r} is also sources.0.paths.0 (source dl): a file both match "
        "is read for dl only, never for bo; remove it from one of them\n")


def test_a_file_overlap_that_loses_no_type_stays_a_warning(tmp_path: Path) -> None:
    logs = _logs(tmp_path, "acct-1.csv", "other.csv")
    config = config_from_dict({"sources": [{"name": "all", "paths": [str(logs / "acct-*.csv")]},
                                           {"name": "bo", "paths": [str(logs / "*.csv")], "records": ["b"]}],
                               "state_dir": str(tmp_path / "state"), "listen": LISTEN})
    assert not [p for p in preflight.problems(config) if p.startswith("sources.")]
    assert [w for w in preflight.run_warnings(config) if w.startswith("sources.")] == [
        f"sources.1.paths.0: {str(logs / '*.csv')!r} also matches {logs / 'acct-1.csv'}, a file of sources.0.paths.0 "
        f"{str(logs / 'acct-*.csv')!r} (source all): such a file is read for all only, never for bo; narrow one of "
        "the patterns"]


def test_the_records_and_paths_descriptions_say_the_rule() -> None:
    from exporter.config import SourceConfig

    for key in ("paths", "records"):
        text = SourceConfig.model_fields[key].description or ""
        assert "read for the first source listed only" in text, (key, text)

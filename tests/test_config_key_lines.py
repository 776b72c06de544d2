"""A config problem names the line its key is written on (`line 12: metrics.delay_buckets.1: ...`), as a YAML syntax
error does: in a long file the key path alone left the operator searching (review 2026-12-07)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, load_config_with_lines
from exporter.yamllines import NO_LINES, KeyLines
from exporter.yamlload import UniqueKeyLoader

DOC = """\
# a comment
sources:
  - name: acct
    paths: [/logs/acct-*.csv]
  - &diag
    name: diag
    paths:
      - /logs/diag-*.csv
      - /logs/old-diag-*.csv
  - <<: *diag
    name: diag2
metrics: {listen: 1, delay_buckets: [1, x]}
"""


def _lines(text: str) -> KeyLines:
    return KeyLines(yaml.compose(text, Loader=UniqueKeyLoader))


@pytest.mark.parametrize(("problem", "line"), [
    ("sources: expected a valid list", 2),
    ("sources.0: required key missing", 3),  # the item: where its first key is written
    ("sources.0.paths: wrong", 4),
    ("sources.1.paths.1: wrong", 9),
    ("sources.2.name: wrong", 11),  # its own key, not the merged one
    ("sources.2.paths.0: wrong", 8),  # merged from the anchor: written there
    ("sources.2.paths: wrong", 7),
    ("sources.0.colour: unknown key", 3),  # not written: the nearest key above that is
    ("metrics.listen: unknown key", 12),
    ("metrics.delay_buckets.1: invalid duration 'x'", 12),
    ("sources.7: wrong", 2),  # no such item: the list's key
])
def test_a_problem_is_numbered_with_the_line_of_its_key(problem: str, line: int) -> None:
    lines = _lines(DOC)
    assert lines.line_of(problem) == line
    assert lines.numbered(problem) == f"line {line}: {problem}"


@pytest.mark.parametrize("problem", [
    "state_dir: required key missing",  # its first key is not in the file: no line to give
    "(top level): expected a mapping",
    "not valid YAML: line 3, column 1: ...",  # names no key path
    "cannot reach /x: permission denied",
    "sources .0: spaced",
])
def test_a_problem_without_a_written_key_is_left_as_it_is(problem: str) -> None:
    assert _lines(DOC).numbered(problem) == problem
    assert NO_LINES.numbered(problem) == problem


def test_the_config_error_carries_the_lines_and_keeps_its_problems(tmp_path: Path) -> None:
    """ConfigError.problems stays one `key.path: problem` a problem (the API of load_config); the lines beside it."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\n\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\n    colour: red\n"
                    "tail: {poll_interval: soon}\n")
    with pytest.raises(ConfigError) as refused:
        load_config_with_lines(path)
    assert refused.value.problems[0] == "sources.0.colour: unknown key"
    assert [refused.value.key_lines.line_of(p) for p in refused.value.problems] == [5, 6]


def test_check_config_prints_each_problem_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yml"
    path.write_text("# watchtower\nsources:\n  acct: /var/log/pmta/acct-*.csv\nmetrics:\n  listen: 9100\n"
                    "  delay_buckets: [1, 'x']\ncorrelator:\n  enabled: true\n  bogus: 1\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: invalid configuration",
        "  line 2: sources: expected a valid list, got {'acct': '/var/log/pmta/acct-*.csv'}",
        "  state_dir: required key missing",
        "  line 6: metrics.delay_buckets.1: invalid duration 'x': expected a finite number of seconds or e.g. 5s, "
        "10m, 7d",
        "  line 5: metrics.listen: unknown key",
        "  line 9: correlator.bogus: unknown key"]


def test_a_config_from_a_pipe_is_numbered_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lines come from the one read of the file: a pipe (`--config <(envsubst < tmpl)`) cannot be read twice."""
    import os

    read, write = os.pipe()
    os.write(write, f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\n    colour: red\n"
             .encode())
    os.close(write)
    try:
        assert main(["check-config", f"/dev/fd/{read}"]) == 2
    finally:
        os.close(read)
    assert capsys.readouterr().err.splitlines()[1:] == ["  line 4: sources.0.colour: unknown key"]


def test_a_hub_config_problem_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub.yml"
    path.write_text("listen: 127.0.0.1:0\nhub:\n  targets: ['http://127.0.0.1:9469']\n  tiemout: 5s\n")
    assert main(["check-config", "--hub", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{path}: invalid configuration", "  line 4: hub.tiemout: unknown key"]

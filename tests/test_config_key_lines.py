"""A config problem names the line its key is written on (`line 12: metrics.delay_buckets.1: ...`), as a YAML syntax
error does: in a long file the key path alone left the operator searching (review 2026-12-07)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, load_config
from exporter.yamllines import KeyLines, numbered
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


def _lines(text: str, built: bool = True) -> KeyLines:
    """The lines of `text` as the config loader keeps them (built: its merges flattened), or as composed."""
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if built:
            loader.construct_document(root)
        return KeyLines(root)
    finally:
        loader.dispose()


@pytest.mark.parametrize("built", [True, False], ids=["built", "composed"])
@pytest.mark.parametrize(("loc", "line"), [
    (("sources",), 2),
    (("sources", 0), 3),  # the item: where its first key is written
    (("sources", 0, "paths"), 4),
    (("sources", 1, "paths", 1), 9),
    (("sources", 2, "name"), 11),  # its own key, not the merged one
    (("sources", 2, "paths", 0), 8),  # merged from the anchor: written there
    (("sources", 2, "paths"), 7),
    (("sources", 0, "colour"), 3),  # not written: the nearest key above that is
    (("metrics", "listen"), 12),
    (("metrics", "delay_buckets", 1), 12),
    (("sources", 7), 2),  # no such item: the list's key
    (("sources", "\u00b2"), 2),  # not an index (a digit Python's int() does not read)
    (("state_dir",), None),  # its first key is not in the file: no line to give
    ((), None),
])
def test_a_key_path_has_the_line_of_its_key(loc: tuple, line: int | None, built: bool) -> None:
    assert _lines(DOC, built).line_of(loc) == line


OVERRIDES = """\
state_dir: /s
base: &b {start_position: end, poll_interval: 1s}
other: &o {start_position: beginning, max_line_bytes: 1}
sources:
  - &acct
    name: acct
    paths: ["/logs/acct-*.csv"]
  - <<: *acct
    name: acct2
    paths: ["relative/acct-*.csv"]
tail:
  <<: [*b, *o]
  poll_interval: 2s
"""


def test_a_key_a_mapping_overrides_or_merges_from_a_list_has_the_line_of_the_value_built() -> None:
    """Review 2026-12-07: PyYAML puts the merged pairs before a mapping's own while it builds it, and the first pair
    of a key was taken: a source's own `paths` overriding its anchor's was given the anchor's line (editing which
    breaks the other source). The value built is the last pair of the key in the mapping as built (of `<<: [*b,
    *o]`, whichever PyYAML keeps: 6.0.4 tells merged keys apart by the identity of their strings)."""
    data = yaml.load(OVERRIDES, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    assert data["sources"][1]["paths"] == ["relative/acct-*.csv"]
    lines = _lines(OVERRIDES)
    assert lines.line_of(("sources", 1, "paths", 0)) == 10
    assert lines.line_of(("sources", 1, "name")) == 9
    assert lines.line_of(("tail", "poll_interval")) == 13
    written = OVERRIDES.splitlines()
    for key in ("start_position", "max_line_bytes"):
        line = lines.line_of(("tail", key))
        assert line is not None and f"{key}: {data['tail'][key]}" in written[line - 1], (key, line)


def test_a_problem_is_numbered_only_when_its_line_is_known() -> None:
    assert numbered(["a: x", "b: y", "c: z"], [4, None]) == ["line 4: a: x", "b: y", "c: z"]
    assert numbered(["a: x"], None) == ["a: x"]
    assert KeyLines(None).line_of(("a",)) is None


def test_the_config_error_carries_the_lines_and_keeps_its_problems(tmp_path: Path) -> None:
    """ConfigError.problems stays one `key.path: problem` a problem (the API of load_config); the lines beside it."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\n\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\n    colour: red\n"
                    "tail: {poll_interval: soon}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.problems[0] == "sources.0.colour: unknown key"
    assert refused.value.lines == [5, 6]


@pytest.mark.parametrize(("text", "want"), [
    ("sources.0.paths: 1\n", "line 6: sources.0.paths: unknown key"),  # a key with dots in it is one key
    ("tail:\n  poll.interval: 4\n", "line 7: tail.poll.interval: unknown key"),
    ("sources.\u00b2: 1\n", "line 6: sources.\u00b2: unknown key"),  # (int('²') raised: a traceback, exit 1)
    ("tail:\n  \"poll interval\": 4\n", "line 7: tail.poll interval: unknown key"),
])
def test_a_key_that_reads_as_a_path_is_numbered_as_the_key_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   text: str, want: str) -> None:
    """Review 2026-12-07: the line was looked up from the problem's text, where `sources.0.paths` written as one key
    reads as the path to source 0's paths (line 4, a valid key), and `sources.²` as an index (int() raised)."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\nsources:\n  - name: acct\n    paths: ['{tmp_path}/a-*.csv']\n"
                    f"    records: [d]\n{text}")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{path}: invalid configuration", f"  {want}"]


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


def test_a_key_yaml_reads_as_another_kind_is_never_given_a_string_keys_line(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Review 2026-12-07: pydantic names `yes:` 1, `null:` None and `0x10:` 16 (`invalid_key`), and the keys were
    matched by their text: each problem was given the line of the string key spelled so (`"1"`, `"None"`, `"16"`)."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\n"
                    '"1": a\n"None": b\n"16": c\nyes: 1\nnull: 3\n0x10: 6\n')
    assert main(["check-config", str(path)]) == 2
    assert [line.split(": ", 2)[:2] for line in capsys.readouterr().err.splitlines()[1:]] == [
        ["  line 4", "1"], ["  line 5", "None"], ["  line 6", "16"], ["  line 7", "1"], ["  line 8", "None"],
        ["  line 9", "16"]]


class _CountedPairs(list):
    """A mapping's pairs that count the walks over them."""

    walks = 0

    def __iter__(self):  # noqa: ANN204 - list's own
        type(self).walks += 1
        return super().__iter__()


def test_many_problems_in_one_mapping_walk_its_keys_once() -> None:
    """Review 2026-12-07: each problem's look-up walked its mapping's pairs (a merge key was looked for): 10k unknown
    keys in one mapping took 7 s, 20k 52 s, a 1 MiB file minutes. Each mapping is indexed once."""
    lines = _lines("".join(f"k{n}: 1\n" for n in range(2000)))
    root = lines._root
    root.value = _CountedPairs(root.value)
    _CountedPairs.walks = 0
    assert [lines.line_of((f"k{n}",)) for n in range(2000)] == list(range(1, 2001))
    assert _CountedPairs.walks == 1


def test_an_index_into_a_set_given_for_a_list_is_the_lists_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review 2026-12-07: a `!!set` given for `delay_buckets` is a list to pydantic in the set's order (the hash's),
    and its index was looked up as a key of the set: `? 0` on line 7 named for the `x` of line 6, or another line
    with another PYTHONHASHSEED. An index names no key of a mapping: the line is the list key's."""
    problem = _the_one_metrics_problem(tmp_path, capsys, "  delay_buckets: !!set\n    ? x\n    ? 0\n    ? 1\n")
    assert problem.startswith("  line 5: metrics.delay_buckets."), problem


def _the_one_metrics_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str], metrics: str) -> str:
    """The one problem check-config prints for a config whose `metrics:` mapping (line 4) holds `metrics`."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\nmetrics:\n{metrics}")
    assert main(["check-config", str(path)]) == 2
    [problem] = capsys.readouterr().err.splitlines()[1:]
    return problem


@pytest.mark.parametrize("key", ["2024-01-01", "2024-01-01 10:00:00", "!!binary aGVsbG8=", "1.5"])
def test_a_key_yaml_reads_as_a_date_or_bytes_has_its_own_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              key: str) -> None:
    """Review 2026-12-07: pydantic names a date key by its repr (`datetime.date(2024, 1, 1)`), the index by its str
    (`2024-01-01`): the problem was given its mapping's line."""
    problem = _the_one_metrics_problem(tmp_path, capsys, f"  delay_buckets: [1]\n  ? {key}\n  : 2\n")
    assert problem.startswith("  line 6: metrics."), problem


@pytest.mark.parametrize("brk", ["\u2028", "\u2029", "\x85", "\r"])
def test_lines_are_counted_by_newlines_as_an_editor_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                brk: str) -> None:
    """Review 2026-12-07: PyYAML also counts U+2028, U+2029, NEL and a lone CR as line breaks; `grep -n` and editors
    do not: every problem after one (a key's line, a syntax error's line and column) was a line too far."""
    path = tmp_path / "c.yml"
    path.write_text(f"sources:\n  - paths: ['{tmp_path}/a-*.csv']\n    name: \"acct{brk}x\"\nstate_dir: {tmp_path}/s\n"
                    "metrics:\n  colour: 1\n", newline="")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == ["  line 6: metrics.colour: unknown key"]
    path.write_text(f"name: \"a{brk}b\"\nother: [1,\n  ]]\n", newline="")
    assert main(["check-config", str(path)]) == 2
    [problem] = capsys.readouterr().err.splitlines()[1:]
    assert problem.startswith("  line 3, column 4: not valid YAML: "), problem


def test_at_most_a_hundred_problems_are_shown_then_how_many_more(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Review 2026-12-07: a file of aliases of one wrong mapping (within yamlload's bound) had 480k problems: a 23 MB
    report, and one log line of it at SIGHUP."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\nx: &s {{paths: ['{tmp_path}/a-*.csv'], colour: 1}}\n"
                    f"sources: [{', '.join(['*s'] * 150)}]\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 + 100 + 1
    assert err[1:101] == [f"  line 2: sources.{n}.colour: unknown key" for n in range(100)]
    assert err[-1] == "  ... and 51 more problems (not shown)"
    assert numbered(["a"] * 101, [1] * 101)[-1] == "... and 1 more problems (not shown)"


class _CountedName(str):
    """A source name that counts its comparisons (how many times a check compared two names)."""

    compared = 0
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        type(self).compared += 1
        return str.__eq__(self, other)


def test_repeated_source_names_are_found_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 2026-12-07: the check compared each name with every other (list.count per name): 190k aliases of one
    source took 24 s to be refused. Work counted in comparisons, not time."""
    from exporter.config import SourceConfig, config_from_dict

    monkeypatch.setattr(SourceConfig, "label", property(lambda self: _CountedName(self.name or "acct")))
    _CountedName.compared = 0
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"state_dir": "/tmp/s", "sources": [{"paths": ["/logs/a-*.csv"]}] * 2000})
    assert refused.value.problems == ["sources: source names must be unique; repeated: acct"]
    assert _CountedName.compared < 10 * 2000


class _ScannedText(str):
    """A document's text that counts the passes over it (each whole-text scan a look-up made)."""

    scans = 0

    def __contains__(self, part: object) -> bool:
        type(self).scans += 1
        return str.__contains__(self, part)  # type: ignore[operator]

    def __iter__(self):  # noqa: ANN204 - str's own
        type(self).scans += 1
        return str.__iter__(self)

    def count(self, *args: object) -> int:  # type: ignore[override]
        type(self).scans += 1
        return str.count(self, *args)  # type: ignore[arg-type]

    def rfind(self, *args: object) -> int:  # type: ignore[override]
        type(self).scans += 1
        return str.rfind(self, *args)  # type: ignore[arg-type]


def test_lines_counted_by_newlines_scan_the_text_once_not_once_a_key() -> None:
    """Its review: each key's line rescanned the whole text (for U+2028 and the like, then counting the newlines
    before it): 100k keys of a 1 MiB file with one U+2028 took 28 s. Work counted in passes over the text."""
    text = "".join(f"k{n}: 1\n" for n in range(2000)) + "# end\u2028\n"
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    _ScannedText.scans = 0
    lines = KeyLines(root, _ScannedText(text))
    assert [lines.line_of((f"k{n}",)) for n in range(2000)] == list(range(1, 2001))
    assert _ScannedText.scans <= 8


def test_a_tag_a_value_cannot_take_is_one_line_without_the_value(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Review 2026-12-07: `!!bool hunter2` (PyYAML's KeyError, naming the value) was a traceback showing the password."""
    path = tmp_path / "c.yml"
    path.write_text(f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\nweb:\n"
                    "  basic_auth_users:\n    prom: !!bool hunter2\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[1:] == ["  line 6: not valid YAML: a value it cannot read (...); quote it if it is text"]
    assert "hunter2" not in err

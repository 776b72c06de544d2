"""Config loading and `watchtower check-config`: every problem reported with its key path, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import ConfigError, load_config, parse_duration, parse_size

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_example_is_valid(capsys):
    assert main(["check-config", str(ROOT / "examples" / "watchtower.yml")]) == 0
    cfg = load_config(ROOT / "examples" / "watchtower.yml")
    assert [s.label for s in cfg.sources] == ["acct", "diag", "bounce", "fbl"]
    assert cfg.sources[2].records == ["rb", "rs"]
    assert cfg.listen_port == 9469


def test_check_config_lists_every_problem_with_its_key_path(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "sources:\n  - paths: ['/x/*.csv']\n    records: [d, nonsense]\n    colour: red\n"
        "listen: 'nohost'\ntail:\n  poll_interval: soon\nbogus: 1\n"
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: invalid configuration" in err
    for expected in ("sources.0.records: Value error, unknown record type 'nonsense'",
                     "sources.0.colour: unknown key", "state_dir: Field required", "listen: Value error",
                     "tail.poll_interval: Value error, invalid duration 'soon'", "bogus: unknown key"):
        assert expected in err, expected


def test_duplicate_source_names_are_rejected(tmp_path: Path):
    f = tmp_path / "c.yml"
    f.write_text("sources:\n - {paths: ['/a/acct-*.csv']}\n - {paths: ['/b/acct-*.csv']}\nstate_dir: /s\n"
                 "listen: ':9469'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert "source names must be unique; repeated: acct" in exc.value.problems[0]


def test_record_aliases_and_units():
    assert parse_duration("250ms") == 0.25 and parse_duration("7d") == 604800 and parse_duration(3) == 3.0
    assert parse_size("1MiB") == 1048576 and parse_size("512KiB") == 524288 and parse_size(10) == 10
    with pytest.raises(ValueError):
        parse_duration(True)


def test_unreadable_file_exits_2(tmp_path: Path, capsys):
    assert main(["check-config", str(tmp_path / "missing.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err

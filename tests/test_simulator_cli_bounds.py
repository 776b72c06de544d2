"""`pmta-sim generate` bounds how much it simulates as `run` bounds `--duration` (exporter.cliargs.MAX_DURATION, 30
days): `--minutes 1e9` wrote 200 MB in 20 s before it was killed (review 2026-12-06), and a scenario's `duration`,
the default of `--minutes`, ran for ever at `.inf`. A number past the bound is a usage error naming it, exit 2,
before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cliargs import MAX_DURATION
from simulator.scenario import ScenarioError, parse_scenario

MAX_MINUTES = MAX_DURATION / 60  # 43200: 30 simulated days


@pytest.mark.parametrize(("value", "last"), [
    ("1e9", "expected a number greater than 0 and at most 43200, got '1e9'"),
    ("43200.5", "expected a number greater than 0 and at most 43200, got '43200.5'"),
    ("inf", "expected a finite number greater than 0, got 'inf'"),
    ("0", "expected a finite number greater than 0, got '0'"),
])
def test_generate_minutes_past_the_bound_is_a_usage_error_naming_it(
        tmp_path: Path, value: str, last: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from simulator import cli

    def accepted(args: object) -> None:  # never simulate what was to be refused (1e9 minutes: for ever)
        pytest.fail(f"--minutes {value} was accepted")

    monkeypatch.setattr(cli, "build_simulator", accepted)
    main = cli.main
    with pytest.raises(SystemExit) as done:
        main(["generate", "--out", str(tmp_path / "out"), "--minutes", value])
    err = capsys.readouterr().err
    assert (done.value.code, err.splitlines()[-1]) == (2, f"pmta-sim generate: error: argument --minutes: {last}"), err
    assert not (tmp_path / "out").exists()


def test_generate_takes_minutes_up_to_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    from simulator.cli import _parser

    assert _parser().parse_args(["generate", "--out", "x", "--minutes", "43200"]).minutes == MAX_MINUTES
    assert _parser().parse_args(["generate", "--out", "x", "--minutes", "0.5"]).minutes == 0.5
    with pytest.raises(SystemExit):
        _parser().parse_args(["generate", "-h"])
    assert "at most 43200 (30 days)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("duration", [".inf", "31d", "2592001"])
def test_a_scenario_duration_past_30_days_is_refused(duration: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(f"name: x\nduration: {duration}\n")
    assert "duration" in str(exc.value) and "2592000" in str(exc.value), str(exc.value)


def test_a_scenario_of_30_days_is_taken() -> None:
    assert parse_scenario("name: x\nduration: 30d\n").duration == MAX_DURATION

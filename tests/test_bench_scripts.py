"""The benchmarks under bench/ are run by hand, never by the suite: at least each one compiles and states its usage
(a benchmark broken since its last run is found here, not in the middle of a 30-minute measurement)."""

from __future__ import annotations

import py_compile
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPTS = sorted((REPO / "bench").glob("*.py"))
WITH_OPTIONS = [p for p in SCRIPTS if "ArgumentParser" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_compiles(script, tmp_path) -> None:
    py_compile.compile(str(script), cfile=str(tmp_path / "x.pyc"), doraise=True)


@pytest.mark.parametrize("script", WITH_OPTIONS, ids=lambda p: p.name)
def test_a_benchmark_states_its_usage(script) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")

"""polars' page-return policy per kind of run: chosen before polars loads, the operator's own always wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import allocator


def test_use_switches_only_from_the_default_and_before_polars(monkeypatch: pytest.MonkeyPatch) -> None:
    import polars  # noqa: F401 - loaded: too late to switch

    monkeypatch.delenv(allocator.ENV, raising=False)
    allocator.set_default()
    assert os.environ[allocator.ENV] == allocator.DAEMON
    assert allocator.use(allocator.ONESHOT_CORRELATOR) is False
    monkeypatch.delitem(sys.modules, "polars")
    assert allocator.use(allocator.ONESHOT_CORRELATOR) is True
    assert os.environ[allocator.ENV] == allocator.ONESHOT_CORRELATOR
    monkeypatch.setenv(allocator.ENV, "dirty_decay_ms:5")  # the operator's
    allocator.set_default()
    assert allocator.use(allocator.ONESHOT_METRICS) is False
    assert os.environ[allocator.ENV] == "dirty_decay_ms:5"


@pytest.mark.parametrize(("correlator", "operator", "expected"), [
    (True, None, allocator.ONESHOT_CORRELATOR),
    (False, None, allocator.ONESHOT_METRICS),
    (True, "narenas:2", "narenas:2"),
])
def test_each_oneshot_sets_its_policy_before_polars_loads(tmp_path: Path, correlator: bool, operator: str | None,
                                                          expected: str) -> None:
    """A real `watchtower oneshot` process: the policy in the environment when polars is first imported."""
    config = tmp_path / "w.yml"
    config.write_text(json.dumps({"sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}],
                                  "state_dir": str(tmp_path / "state"), "correlator": {"enabled": correlator}}))
    hook = tmp_path / "sitecustomize.py"  # records the policy at polars' first import, in the process itself
    hook.write_text(
        "import builtins, os, sys\n"
        "_real = builtins.__import__\n"
        "def _imp(name, *a, **k):\n"
        "    if name.split('.')[0] == 'polars' and 'polars' not in sys.modules:\n"
        f"        open({str(tmp_path / 'seen')!r}, 'w').write(os.environ.get('_RJEM_MALLOC_CONF', ''))\n"
        "    return _real(name, *a, **k)\n"
        "builtins.__import__ = _imp\n")
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), os.getcwd()])
    if operator:
        env[allocator.ENV] = operator
    done = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "seen").read_text() == expected

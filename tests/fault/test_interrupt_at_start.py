"""A terminal's ^C in the first second of `watchtower run`: the signal goes to the whole foreground process group,
so to the correlator process too while it is still importing (a second of it). Only the daemon decides how the
correlator stops: no traceback from the child, no ERROR about its exit code, and a clean exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AcctWriter, write_config

pytestmark = [pytest.mark.fault, pytest.mark.integration]

STARTED = b"correlator process started"
DELAYS = (0.0, 0.05, 0.2, 0.5)
"""Seconds after the daemon says it spawned the correlator: from its interpreter's start through its imports."""


def start_run(tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`watchtower run` with the correlator in its own process, leading a process group as a shell's job does."""
    (tmp / "logs").mkdir(parents=True)
    AcctWriter(tmp / "logs").write(200)
    cfg = write_config(tmp, correlator={"enabled": True, "worker": "process"})
    out = tmp / "run.log"
    with open(out, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg)],
                                stdout=logf, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    return proc, out


def interrupt_after_spawn(runs: list[tuple[subprocess.Popen[bytes], Path]], deadline: float) -> None:
    """^C to each job DELAYS[i] s after its correlator process was spawned (at once if its daemon exited)."""
    due: dict[int, float | None] = {}
    while len(due) < len(runs) or any(when is not None for when in due.values()):
        now = time.monotonic()
        for i, (proc, out) in enumerate(runs):
            if i not in due and (STARTED in out.read_bytes() or proc.poll() is not None or now > deadline):
                due[i] = now + DELAYS[i]
            when = due.get(i)
            if when is not None and now >= when:
                if proc.poll() is None:  # the assertions say why it exited already
                    os.killpg(proc.pid, signal.SIGINT)
                due[i] = None
        time.sleep(0.002)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_gone(pgid: int, timeout: float) -> bool:
    """Whether no process of the group `pgid` is left (the correlator too) within `timeout` s."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_ctrl_c_in_the_first_second_stops_cleanly_without_the_childs_traceback(tmp_path: Path):
    runs = [start_run(tmp_path / f"at-{delay}") for delay in DELAYS]  # side by side: a few seconds in all
    deadline = time.monotonic() + 20
    try:
        interrupt_after_spawn(runs, deadline)
        codes = [proc.wait(timeout=max(1.0, deadline - time.monotonic())) for proc, _ in runs]
        assert all(group_gone(proc.pid, 3.0) for proc, _ in runs), "a correlator process outlived its daemon"
    finally:
        for proc, _ in runs:
            if proc.poll() is None or group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for (_, out), delay, code in zip(runs, DELAYS, codes, strict=True):
        text = out.read_text(errors="replace")
        assert STARTED.decode() in text, text
        assert "Traceback" not in text, f"^C {delay}s after the spawn:\n{text}"
        assert "Fatal Python error" not in text, f"^C {delay}s after the spawn:\n{text}"
        assert "KeyboardInterrupt" not in text, f"^C {delay}s after the spawn:\n{text}"
        assert [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line] == [], text
        assert "shutting down" in text, text
        assert code == 0, f"^C {delay}s after the spawn: exit {code}\n{text}"

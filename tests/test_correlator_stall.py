"""A correlator process that stops making progress without dying is said: /healthz, a gauge, one log line.

A review found it invisible: with the correlator process stopped (`kill -STOP`), or a new one waiting forever for
the lock a stopped predecessor holds, /healthz stayed `ok: true` with no problem while `commit_backlog_bytes` grew,
nothing was logged and no metric moved. Now the daemon's progress watchdog (`correlator.stall_timeout`) makes
/healthz 503 with a problem, sets watchtower_correlator_stalled to 1 and logs one ERROR; it clears (INFO) when the
process stores again. An idle correlator (nothing behind) and a slow one that advances never trip it. The follower
waiting for its lock says so (WARNING, naming the lock file and its holder), a few seconds in and then at most
once a minute.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.client import HTTP
from tests.conftest import AcctWriter, Watchtower, correlator_pid, free_port, scrape, write_config

pytestmark = pytest.mark.integration

STALL = 2.0
"""correlator.stall_timeout of these tests (default 120 s)."""
STALL_LINE = "correlator process stalled"
RESUMED_LINE = "correlator process makes progress again"
LOCK_LINE = "waiting for its lock"



def config(tmp_path: Path, stall: float = STALL) -> Path:
    return write_config(tmp_path, correlator={"enabled": True, "worker": "process", "stall_timeout": stall},
                        listen=f"127.0.0.1:{free_port()}")


def new_writer(tmp_path: Path) -> AcctWriter:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return AcctWriter(tmp_path / "logs")


def health(wt: Watchtower) -> tuple[int, dict[str, Any]]:
    r = HTTP.get(wt.url + "/healthz", timeout=5)
    return r.status_code, r.json()


def stalled_gauge(wt: Watchtower) -> float | None:
    return scrape(wt.url + "/metrics").get(("watchtower_correlator_stalled", ()))


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def stall_problems(body: dict[str, Any]) -> list[str]:
    return [p for p in body["problems"] if "stored nothing" in p]


def stored(state: Path) -> int:
    with sqlite3.connect(state / "watchtower.db") as db:
        return int(db.execute("SELECT count(*) FROM corr_timelines").fetchone()[0])


def settled(wt: Watchtower, tmp_path: Path, total: int) -> None:
    """Counted and committed, and every record stored by the correlator process: it holds its lock (a process stopped
    before, still importing on a busy machine, held none, and the next one took the lock at once)."""
    wt.committed(timeout=60)

    def all_stored() -> bool:
        try:
            return stored(tmp_path / "state") == total
        except sqlite3.Error:  # (its tables not made yet)
            return False

    wait_until(all_stored, 60, f"the correlator process stored all {total} records")


def lines(wt: Watchtower, text: str) -> list[str]:
    return [line for line in wt.log.read_text().splitlines() if text in line]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids this test stopped: continued at its end, whatever happened (a stopped process never exits)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_stopped_correlator_is_unhealthy_said_once_and_clears_when_it_goes_on(
        tmp_path: Path, watchtower_factory, stopped: list[int]) -> None:
    writer = new_writer(tmp_path)
    writer.write(200)
    wt = watchtower_factory(config(tmp_path)).start()
    assert wt.proc is not None
    settled(wt, tmp_path, writer.total)
    # idle (nothing behind) for longer than the threshold: healthy, the gauge at 0
    time.sleep(STALL * 1.5)
    code, body = health(wt)
    assert (code, body["ok"], body["problems"]) == (200, True, []), body
    assert stalled_gauge(wt) == 0
    pid = correlator_pid(wt.proc.pid)
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)
    # stopped while idle: nothing to store, nothing said
    time.sleep(STALL * 1.5)
    code, body = health(wt)
    assert (code, body["ok"], body["problems"]) == (200, True, []), body
    writer.write(3000)

    def unhealthy() -> dict[str, Any] | None:
        code, body = health(wt)
        return body if code == 503 and stall_problems(body) else None

    body = wait_until(unhealthy, 30, "/healthz says the correlator process stalled")
    assert body["ok"] is False and body["commit_backlog_bytes"] > 0, body
    (problem,) = stall_problems(body)
    assert f"pid {pid}" in problem, problem
    assert stalled_gauge(wt) == 1
    time.sleep(STALL * 2)  # still stalled: no second line
    said = lines(wt, STALL_LINE)
    assert len(said) == 1 and "ERROR" in said[0], said
    assert health(wt)[0] == 503
    os.kill(pid, signal.SIGCONT)
    stopped.remove(pid)
    wt.committed(timeout=60)
    code, body = wait_until(lambda: (c := health(wt))[0] == 200 and c, 30, "/healthz ok again")
    assert (body["ok"], body["problems"]) == (True, []), body
    assert stalled_gauge(wt) == 0
    resumed = lines(wt, RESUMED_LINE)
    assert len(resumed) == 1 and "INFO" in resumed[0], resumed
    assert len(lines(wt, STALL_LINE)) == 1
    assert scrape(wt.url + "/metrics").get(("watchtower_correlator_restarts_total", ())) == 0
    assert correlator_pid(wt.proc.pid) == pid  # the same process went on: nothing restarted it
    wt.stop()
    assert stored(tmp_path / "state") == writer.total  # nothing lost, nothing twice


def test_a_slow_correlator_that_advances_never_trips_the_watchdog(
        tmp_path: Path, watchtower_factory, stopped: list[int]) -> None:
    """Stopped 0.3 s of every 0.6 s (half its speed) while it works through a backlog: it stores slice after slice,
    so its positions advance well within the threshold, and nothing is said."""
    writer = new_writer(tmp_path)
    writer.write(100)
    wt = watchtower_factory(config(tmp_path, stall=15.0)).start()  # (a slice takes far less, even on a busy machine)
    assert wt.proc is not None
    settled(wt, tmp_path, writer.total)
    pid = correlator_pid(wt.proc.pid)
    for _ in range(6):
        writer.write(5000)
        writer.rotate()
    seen_behind = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        time.sleep(0.3)
        os.kill(pid, signal.SIGCONT)
        stopped.remove(pid)
        time.sleep(0.3)
        code, body = health(wt)
        assert not stall_problems(body) and code == 200, body
        seen_behind = seen_behind or body["commit_backlog_bytes"] > 0
        if seen_behind and body["commit_backlog_bytes"] == 0 and body["commit_backlog_rows"] == 0:
            break
    else:
        raise AssertionError("the backlog did not drain in 90 s")
    assert seen_behind
    assert lines(wt, STALL_LINE) == [] and stalled_gauge(wt) == 0
    wt.stop()
    assert stored(tmp_path / "state") == writer.total


def test_a_correlator_waiting_for_a_stopped_predecessors_lock_says_so_and_is_unhealthy(
        tmp_path: Path, watchtower_factory, stopped: list[int]) -> None:
    """Repro A: the correlator process stopped, its daemon killed, the daemon started again: the new correlator
    process waits for the lock the stopped one holds. It says so (WARNING naming the lock and its holder's pid) a
    few seconds in, not again within the minute; with records behind /healthz is 503 naming the wait; once the old
    one is continued it sees its daemon gone and exits, the new one takes the lock and stores everything."""
    writer = new_writer(tmp_path)
    writer.write(200)
    wt = watchtower_factory(config(tmp_path)).start()
    assert wt.proc is not None
    settled(wt, tmp_path, writer.total)
    old = correlator_pid(wt.proc.pid)
    os.kill(old, signal.SIGSTOP)
    stopped.append(old)
    wt.kill9()
    wt.start()
    new = correlator_pid(wt.proc.pid)
    assert new != old
    writer.write(1000)
    lock = tmp_path / "state" / "correlator.lock"

    def warned() -> list[str]:
        return lines(wt, LOCK_LINE)

    said = wait_until(warned, 30, "the new correlator process says it waits for the lock")
    assert len(said) == 1 and "WARNING" in said[0] and str(lock) in said[0] and f"pid {old}" in said[0], said

    def unhealthy() -> dict[str, Any] | None:
        code, body = health(wt)
        return body if code == 503 and stall_problems(body) else None

    body = wait_until(unhealthy, 30, "/healthz says the new correlator process is stuck")
    (problem,) = stall_problems(body)
    assert f"pid {new}" in problem and "correlator.lock" in problem and f"pid {old}" in problem, problem
    assert stalled_gauge(wt) == 1
    time.sleep(3)
    assert len(warned()) == 1  # at most once a minute after the first
    os.kill(old, signal.SIGCONT)
    stopped.remove(old)
    wait_until(lambda: not alive(old), 30, "the old correlator process exits once continued")
    wt.committed(timeout=60)
    code, body = wait_until(lambda: (c := health(wt))[0] == 200 and c, 30, "/healthz ok again")
    assert (body["ok"], body["problems"]) == (True, []), body
    assert stalled_gauge(wt) == 0
    assert len(lines(wt, RESUMED_LINE)) == 1
    assert correlator_pid(wt.proc.pid) == new
    wt.stop()
    assert stored(tmp_path / "state") == writer.total


def test_the_stall_timeout_is_a_duration_with_a_default_of_two_minutes(tmp_path: Path) -> None:
    from exporter.config import ConfigError, config_from_dict

    base = {"sources": [{"name": "acct", "paths": [str(tmp_path / "*.csv")]}], "state_dir": str(tmp_path / "state")}
    assert config_from_dict(base).correlator.stall_timeout == 120.0
    assert config_from_dict({**base, "correlator": {"stall_timeout": "5m"}}).correlator.stall_timeout == 300.0
    with pytest.raises(ConfigError):
        config_from_dict({**base, "correlator": {"stall_timeout": 0}})


def test_the_lock_holder_is_found_in_proc_locks_or_said_unknown(tmp_path: Path) -> None:
    import fcntl

    from exporter.follower import _held_by, lock_holder

    lock = tmp_path / "correlator.lock"
    with open(lock, "a") as f:
        assert lock_holder(lock) is None  # no lock held
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_holder(lock) == os.getpid()
        assert _held_by(os.getpid()).startswith(f"held by pid {os.getpid()} (")
    assert lock_holder(tmp_path / "absent") is None
    assert "cannot be known" in _held_by(None)

"""Review 2026-12 of basic auth: a bcrypt cost with no upper bound, and X-Forwarded-For choosing the client address.

1. `$2b$31$...` passed check-config and `run` never listened: the dummy hash (what unknown users are checked
   against) was computed at cost 31 on the event loop, for days, SIGTERM unanswered. Costs above MAX_BCRYPT_COST are
   a config error now, and the dummy hash is never computed (only a bcrypt check costs anything).
2. uvicorn's defaults (`proxy_headers=True`, `forwarded_allow_ips=127.0.0.1`) let a loopback peer name its own
   address in X-Forwarded-For, so each forged address got its own bcrypt check past the one-in-flight limit.

Requests go over TCP to the real listeners (daemon and hub); bcrypt work is counted, never timed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter import webauth
from tests import test_http_auth_limits as auth_limits
from tests.conftest import REPO, free_port, write_config
from tests.test_http_auth_limits import HASH, PASSWORD

BOUND = 14
"""The highest cost accepted, as docs/security.md states it."""
HELD = "held-wrong-password"
"""The one wrong password whose bcrypt check the tests hold in flight."""


def hash_of_cost(cost: int) -> str:
    """A hash bcrypt can check at `cost` without making it (making one at cost 31 would take days): a real salt of
    that cost and 31 hash characters that no password gives."""
    return bcrypt.gensalt(rounds=cost).decode() + "." * 31


def watchtower(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


# --- 1. an upper bound on the bcrypt cost ---------------------------------------------------------


def test_the_bound_is_the_documented_one() -> None:
    assert webauth.MAX_BCRYPT_COST == BOUND
    assert f"above {BOUND}" in (REPO / "docs" / "security.md").read_text()


@pytest.mark.parametrize("cost", [4, 10, BOUND])
def test_costs_up_to_the_bound_are_accepted(cost: int) -> None:
    assert webauth.bcrypt_problem(hash_of_cost(cost)) is None


@pytest.mark.parametrize("cost", [BOUND + 1, 20, 31])
def test_a_cost_above_the_bound_is_refused_saying_which_cost_to_use(cost: int) -> None:
    problem = webauth.bcrypt_problem(hash_of_cost(cost))
    assert problem is not None
    assert f"cost {cost} is above {BOUND}" in problem and "\n" not in problem


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_check_config_and_run_refuse_cost_31_naming_the_file_and_the_user(tmp_path: Path, command: str) -> None:
    """check-config said ok; run never listened and ignored SIGTERM (the dummy hash at cost 31, on the loop)."""
    config = write_config(tmp_path, listen=f"127.0.0.1:{free_port()}",
                          web={"basic_auth_users": {"prom": "$2b$31$" + HASH[7:]}})
    proc = watchtower(*(["check-config", str(config)] if command == "check-config" else ["run", "--config",
                                                                                            str(config)]))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert f"{config}: invalid configuration" in lines
    [problem] = [ln for ln in lines if "basic_auth_users" in ln and "warning" not in ln]
    assert problem == ("  line 15: web.basic_auth_users: user 'prom': bcrypt cost 31 is above 14, the highest accepted: "
                       "each step doubles a login's work (~1 s at 14); hash the password again at cost 10 to 12"), problem
    assert HASH[7:] not in proc.stderr  # the hash is never quoted


def test_no_bcrypt_hash_is_made_when_auth_is_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """BasicAuth is built on the event loop (Daemon._start_listener, the hub's build_hub_app): only bcrypt_problem's
    salt check at cost 04 may run there, never a hash at the configured cost."""
    made: list[bytes] = []
    real = bcrypt.hashpw

    def spy(password: bytes, salt: bytes) -> bytes:
        made.append(salt[:7])
        return real(password, salt)

    monkeypatch.setattr(webauth.bcrypt, "hashpw", spy)
    webauth.BasicAuth({"prom": hash_of_cost(BOUND), "legacy": "plain-pw"})
    assert set(made) <= {b"$2b$04$"}


def test_an_unknown_user_is_still_checked_at_the_configured_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webauth.bcrypt, "checkpw", lambda pw, hashed: checked.append(hashed[:7]) or real(pw, hashed))
    auth = webauth.BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)).decode(), "legacy": "plain"})
    assert [auth.verify("nobody", "x"), auth.verify("legacy", "wrong"), auth.verify("prom", "wrong")] == [False] * 3
    assert checked == [b"$2b$05$"] * 3
    assert auth.verify("prom", "pw") and auth.verify("legacy", "plain")


def test_a_cost_above_the_bound_given_to_basic_auth_directly_lets_nobody_in(caplog: pytest.LogCaptureFixture) -> None:
    """An embedding caller that skips the config: the user is refused (logged), no hash is made at its cost."""
    auth = webauth.BasicAuth({"slow": "$2b$31$" + HASH[7:], "prometheus": HASH})
    assert "web.basic_auth_users.slow" in caplog.text and "cost 31" in caplog.text
    assert (auth.verify("slow", PASSWORD), auth.verify("prometheus", PASSWORD)) == (False, True)


# --- 2. X-Forwarded-For does not choose the client address -----------------------------------------


async def forwarded_request(port: int, password: str, forwarded_for: str) -> int:
    """One GET /healthz from 127.0.0.1 as `prometheus`, claiming to forward for `forwarded_for`; the status."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=10)
    auth = base64.b64encode(f"prometheus:{password}".encode()).decode()
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nX-Forwarded-For: "
                 f"{forwarded_for}\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n".encode())
    try:
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert json.loads(body)["status"] == status
    return status


class HeldBcrypt:
    """bcrypt.checkpw, counted; the check of HELD waits for `gate`."""

    def __init__(self) -> None:
        self.real: Callable[[bytes, bytes], bool] = bcrypt.checkpw
        self.calls = 0
        self.gate = threading.Event()

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls += 1
        if password == HELD.encode():
            self.gate.wait(timeout=30)
        return self.real(password, hashed)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldBcrypt]:
    counter = HeldBcrypt()
    monkeypatch.setattr(webauth.bcrypt, "checkpw", counter)
    yield counter
    counter.gate.set()  # never leave a worker thread blocked


port = auth_limits.port
"""The daemon's listener or the hub's (make_server, as `run` and `hub` serve), USERS as basic_auth_users."""


async def test_forged_forwarded_for_addresses_share_the_peers_one_check_in_flight(port: int, held: HeldBcrypt) -> None:
    """8 wrong passwords at once from 127.0.0.1, each claiming another X-Forwarded-For: 8 bcrypt checks were made
    (one per forged address). The peer's own address is the client: one check, the other 7 answered 429."""
    first = asyncio.create_task(forwarded_request(port, HELD, "198.51.100.1"))
    for _ in range(2000):  # loop turns, bounded: until the first check is running (held)
        if held.calls:
            break
        await asyncio.sleep(0.005)
    others = await asyncio.gather(*(forwarded_request(port, f"wrong{i}", f"198.51.100.{i}") for i in range(2, 9)))
    held.gate.set()
    assert [await first, *others] == [401] + [429] * 7
    assert held.calls == 1

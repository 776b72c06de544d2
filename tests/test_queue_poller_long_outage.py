"""A PMTA API that fails for days (a 403 until someone allows the host, a PMTA down over a weekend) must leave
the poller polling at `max_backoff`, and a poller that ends anyway must say so in the log and in /healthz.

Found in review: after 1,025 failures in a row `interval * 2 ** (failures - 1)` raised OverflowError outside the
poll's try; the task ended, nothing logged it, polling never resumed and /healthz said ok."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import PmtaApiConfig
from exporter.queues import QueuePoller


def _poller(transport: httpx.MockTransport | None = None, **config: float) -> QueuePoller:
    return QueuePoller(PmtaApiConfig(url="http://pmta.test", **config), CollectorRegistry(), lambda d: "other",
                       transport=transport)


@pytest.mark.parametrize("max_backoff", [300.0, 0.0])
def test_the_backoff_stays_at_its_ceiling_through_thousands_of_failures(max_backoff: float) -> None:
    poller = _poller(poll_interval=15, max_backoff=max_backoff)
    delays = [poller.next_delay(False) for _ in range(5000)]
    assert delays[:6] == ([15.0, 30.0, 60.0, 120.0, 240.0, 300.0] if max_backoff else [15.0] * 6)
    assert set(delays[6:]) == {max_backoff or 15.0}
    assert poller.next_delay(True) == 15.0  # and a success starts over


def test_the_poller_polls_on_past_1025_failures() -> None:
    def pmta(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="forbidden")  # PMTA's http-access none

    async def main() -> tuple[bool, int]:
        poller = _poller(httpx.MockTransport(pmta), poll_interval=0.001, max_backoff=0)
        task = asyncio.create_task(poller.run())
        while poller.polls < 1100 and not task.done():
            await asyncio.sleep(0.005)
        died = task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return died, poller.polls

    died, polls = asyncio.run(main())
    assert not died and polls >= 1100


def test_a_poller_that_ends_is_logged_and_named_in_healthz(caplog: pytest.LogCaptureFixture) -> None:
    from exporter.daemon import PollerWatch

    async def broken() -> None:
        raise RuntimeError("boom")

    async def main() -> PollerWatch:
        watch = PollerWatch()
        task = asyncio.create_task(broken(), name="pmta-api")
        watch.follow(task)
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        return watch

    with caplog.at_level(logging.ERROR):
        watch = asyncio.run(main())
    assert watch.problem == ("the PMTA API poller stopped (a bug: RuntimeError: boom); queue gauges are not "
                             "refreshed until the daemon restarts")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [watch.problem]


async def test_a_daemon_whose_poller_ended_says_so_in_healthz(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter import queues
    from exporter.config import load_config
    from exporter.daemon import Daemon
    from tests.conftest import write_config

    async def ends(self: QueuePoller) -> None:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(queues.QueuePoller, "run", ends)
    d = Daemon(load_config(write_config(tmp_path, pmta={"url": "http://127.0.0.1:9"})))
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    for _ in range(100):
        if d.health()["problems"]:
            break
        await asyncio.sleep(0.02)
    health = d.health()
    d.should_exit.set()
    assert await asyncio.wait_for(task, 10) == 0
    assert health["ok"] is False
    assert health["problems"] == ["the PMTA API poller stopped (a bug: OverflowError: int too large to convert to "
                                  "float); queue gauges are not refreshed until the daemon restarts"]

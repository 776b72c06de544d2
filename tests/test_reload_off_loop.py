"""A SIGHUP's table load runs off the event loop: an operator's table of a few MiB took ~14 s to load (PyYAML and
the classifier's checks), and on the loop that stopped /metrics, /healthz and tailing for as long. The tables are
swapped on the loop once loaded; signals meanwhile give one more load after it, not loads side by side."""

from __future__ import annotations

import asyncio
import threading

from exporter import daemon as daemon_module
from exporter.classify import load_classifiers
from exporter.config import load_config
from exporter.daemon import Daemon
from tests.conftest import write_config


async def test_the_event_loop_runs_while_the_tables_load_and_swaps_them_after(tmp_path, monkeypatch) -> None:
    ticks = 0
    seen_in_load: list[tuple[int, int]] = []
    loading = threading.Event()
    release = threading.Event()
    calls = 0

    def slow_load(config):  # a big table: the load takes as long as the loop needs to tick 5 times
        nonlocal calls
        calls += 1
        loading.set()
        start = ticks
        release.wait(5)
        seen_in_load.append((start, ticks))
        return load_classifiers(config)

    d = Daemon(load_config(write_config(tmp_path)))
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    monkeypatch.setattr(daemon_module, "load_classifiers", slow_load)  # SIGHUP's loads only
    before = d.isp
    try:
        d._sighup()  # noqa: SLF001 - the handler `watchtower run` installs for SIGHUP
        for _ in range(500):
            await asyncio.sleep(0.01)
            if loading.is_set():
                ticks += 1
                if ticks == 5:
                    d._sighup()  # noqa: SLF001 - a second signal while the first load runs: one more, after it
                    release.set()
            if calls == 2 and d.isp is not before and len(seen_in_load) == 2:
                break
        assert len(seen_in_load) == 2 and calls == 2
        first_start, first_end = seen_in_load[0]
        assert first_end > first_start  # the loop went on while the load ran (it stood still on the loop)
        assert d.isp is not before and d.pipeline is not None
    finally:
        release.set()
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_a_stop_during_a_load_neither_waits_for_it_nor_swaps(tmp_path, monkeypatch) -> None:
    release = threading.Event()
    loading = threading.Event()

    threads: list[threading.Thread] = []
    swapped: list[object] = []

    def stuck_load(config):
        threads.append(threading.current_thread())
        loading.set()
        release.wait(5)
        return load_classifiers(config)

    d = Daemon(load_config(write_config(tmp_path)))
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    monkeypatch.setattr(daemon_module, "load_classifiers", stuck_load)
    monkeypatch.setattr(d, "_swap_tables", lambda *tables: swapped.append(tables))
    before = d.isp
    try:
        d._sighup()  # noqa: SLF001
        for _ in range(500):
            if loading.is_set():
                break
            await asyncio.sleep(0.01)
        assert loading.is_set()
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0  # not held by the load (it is released only below)
        # a thread of its own that a closing loop does not join (the default executor's it would)
        assert [(t.name, t.daemon) for t in threads] == [("sighup-table-load", True)]
        release.set()
        reloading = d._reloading  # noqa: SLF001 - the reload task, ended by the load it waited for
        assert reloading is not None
        await asyncio.wait_for(reloading, 10)
        assert d.isp is before and swapped == []  # loaded after the stop began: nothing swapped, nobody signalled
    finally:
        release.set()


async def test_a_stop_right_after_the_signal_loads_nothing(tmp_path, monkeypatch) -> None:
    calls: list[object] = []
    d = Daemon(load_config(write_config(tmp_path)))
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    monkeypatch.setattr(daemon_module, "load_classifiers", calls.append)
    d._sighup()  # noqa: SLF001 - scheduled on the loop
    d.should_exit.set()  # before the loop runs it
    assert await asyncio.wait_for(task, 20) == 0
    assert calls == [] and d._reloading is None  # noqa: SLF001

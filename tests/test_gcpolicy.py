"""The garbage collector's policy of the long-running processes (exporter/gcpolicy.py): who sets it, and what it does."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exporter.gcpolicy as gcpolicy
from exporter import cli
from exporter.config import load_config
from exporter.daemon import Daemon
from exporter.follower import Follower
from exporter.state import private_dir
from tests.conftest import write_config


@pytest.fixture
def own_gc() -> Iterator[None]:
    """The test process's policy comes back afterwards, whatever a test set."""
    threshold = gc.get_threshold()
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    if enabled:
        gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_settle_collects_then_freezes_and_spaces_young_collections(own_gc: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    garbage = _Cycle()
    dead = weakref.ref(garbage)
    del garbage  # a cycle: only a collection frees it
    kept = _Cycle()
    assert dead() is not None
    gcpolicy.settle()
    assert dead() is None  # collected, not frozen for the life of the process
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen objects are in no generation a collection visits
    assert gc.get_threshold() == (gcpolicy.GEN0_THRESHOLD, 10, 10)


def test_settle_keeps_a_larger_threshold_and_collections_switched_off(own_gc: None) -> None:
    gc.set_threshold(50_000, 20, 5)
    gcpolicy.settle()
    assert gc.get_threshold() == (50_000, 20, 5)
    gc.set_threshold(0)  # an embedding program switched collections off
    gcpolicy.settle()
    assert gc.get_threshold()[0] == 0


async def _started_threshold(tmp_path: Path, **kwargs: Any) -> tuple[tuple[int, int, int], int]:
    cfg = load_config(write_config(tmp_path))
    d = Daemon(cfg, **kwargs)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 10)
        return gc.get_threshold(), gc.get_freeze_count()
    finally:
        d.should_exit.set()
        await asyncio.wait_for(task, 10)


async def test_the_daemon_settles_its_own_process_only(tmp_path: Path, own_gc: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    (tmp_path / "a").mkdir()
    assert await _started_threshold(tmp_path / "a") == ((700, 10, 10), 0)  # embedded (a test): untouched
    (tmp_path / "b").mkdir()
    threshold, frozen = await _started_threshold(tmp_path / "b", owns_process=True)
    assert threshold == (gcpolicy.GEN0_THRESHOLD, 10, 10)
    assert frozen > 0


def test_watchtower_run_owns_its_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[bool] = []

    class FakeDaemon:
        def __init__(self, config: object, owns_process: bool = False, config_path: object = None,
                     interrupted: object = None, web_config_path: object = None) -> None:
            seen.append(owns_process)

        async def serve(self) -> int:
            return 0

    monkeypatch.setattr("exporter.daemon.Daemon", FakeDaemon)
    assert cli.main(["run", "--config", str(write_config(tmp_path))]) == 0
    assert seen == [True]


def test_the_correlator_process_settles_after_its_set_up_before_its_first_slice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_gc: None) -> None:
    cfg = load_config(write_config(tmp_path, correlator={"enabled": True}))
    stop: list[bool] = []
    calls: list[bool] = []

    def settle() -> None:  # record, and stop the loop before its first slice
        calls.append((Path(cfg.state_dir) / "watchtower.db").exists())
        stop.append(True)

    def first_slice(*_a: object, **_k: object) -> None:  # reached without a settle: stop, and the test fails
        calls.append(False)
        stop.append(True)

    monkeypatch.setattr(gcpolicy, "settle", settle)
    monkeypatch.setattr("exporter.writer.write_slices", first_slice)
    private_dir(Path(cfg.state_dir))  # as the daemon does before it starts the process
    Follower(cfg, os.getppid(), stop).run()
    assert calls == [True]  # once, with its store open


def test_tables_loaded_before_settle_are_freed_when_a_reload_replaces_them(tmp_path: Path, own_gc: None) -> None:
    """Frozen objects are never collected: the classification tables a SIGHUP replaces must need no collection."""
    from exporter.classify import load_classifiers

    isp, replies = load_classifiers(load_config(write_config(tmp_path)))
    refs = [weakref.ref(isp), weakref.ref(replies)]
    gcpolicy.settle()
    del isp, replies
    assert [r() for r in refs] == [None, None]  # freed by reference counting, with no collection in between

"""`Simulator`: the traffic model + the accounting files + the ground truth, on a simulated clock.

Two ways to drive it: `generate(minutes)` runs as fast as the CPU allows (tests, benchmarks), and
`run(speed)` paces ticks against the wall clock (`speed` simulated seconds per real second) while
other tasks - the management API server, an exporter - share the event loop. Both produce the same
bytes for the same seed, scenario and start time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

from simulator.clock import SimClock, tz_of
from simulator.config import SimConfig
from simulator.model import TrafficModel
from simulator.queues import QueueBook
from simulator.records import Row
from simulator.scenario import Scenario, load_scenario, start_epoch
from simulator.truth import GroundTruth, TruthKey
from simulator.writer import FileSet

DEFAULT_START = "2024-06-12 08:00:00+00:00"
_SLICE_SECONDS = 0.02
"""In `run`, hand the event loop a millisecond after this much work, so the API answers while catching up."""


def to_epoch(value: datetime | int | float | str) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, int | float):
        return int(value)
    return start_epoch(value)


class Simulator:
    def __init__(self, scenario: Scenario | str | Path = "baseline", out_dir: Path | str | None = None, *,
                 config: SimConfig | None = None, seed: int | None = None,
                 start: datetime | int | float | str | None = None) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        cfg = (config or SimConfig()).with_scenario(self.scenario)
        if seed is not None:
            cfg = cfg.model_copy(update={"seed": seed})
        self.config = cfg
        self.tz = tz_of(cfg.utc_offset_minutes)
        self.start = to_epoch(start if start is not None else self.scenario.start or DEFAULT_START)
        self.t = self.start - 1
        """Last simulated second completed; the first tick is `start`."""
        self.truth = GroundTruth()
        self.truth.start = self.start
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.files = FileSet(self.out_dir, cfg.files, self.tz) if self.out_dir is not None else None
        self.model = TrafficModel(cfg, self.scenario, self.start, self._emit)
        self.closed = False

    @property
    def book(self) -> QueueBook:
        """The live queue state (what the management API serves)."""
        return self.model.book

    def _emit(self, row: Row, key: TruthKey) -> None:
        if self.files is not None and not self.files.add(row):
            return  # this record type goes to no file: PMTA would not have written it
        truth = self.truth
        truth.records[key] += 1
        if key.type == "d":
            truth.delivery_delays[(key.vmta, key.pool, key.isp, row["timeLogged"] - row["timeQueued"])] += 1
            truth.delivered_bytes[(key.vmta, key.pool, key.isp)] += int(row["dlvSize"])

    def step(self) -> None:
        t = self.t + 1
        self.model.tick(t)
        if self.files is not None:
            self.files.flush(t)
        self.t = t
        if (t - self.start) % 60 == 0:
            self.truth.queue_samples.append((t, self.model.book.by_vmta_isp()))

    def run_until(self, sim_ts: float) -> None:
        while self.t + 1 <= sim_ts:
            self.step()

    def generate(self, minutes: float | None = None, close: bool = True) -> GroundTruth:
        """Simulate `minutes` (default: the scenario's duration) as fast as possible; returns the truth."""
        seconds = self.scenario.duration if minutes is None else minutes * 60
        self.run_until(self.t + seconds)
        if close:
            self.close()
        return self.finish_truth()

    async def run(self, speed: float = 1.0, stop: asyncio.Event | None = None, duration: float | None = None,
                  sim_seconds: float | None = None, start_at: float | None = None) -> None:
        """Tick in step with the wall clock until `stop` is set, `duration` real seconds or `sim_seconds`
        simulated seconds have passed. `start_at`: the simulated time the wall clock stands at now (default: the
        next tick); ticks before it are stepped at once (the demo's history up to the present)."""
        clock = SimClock(max(self.t + 1, int(start_at)) if start_at is not None else self.t + 1, speed)
        real_end = time.monotonic() + duration if duration is not None else None
        sim_end = self.t + sim_seconds if sim_seconds is not None else None
        stop = stop or asyncio.Event()
        while not stop.is_set():
            target = clock.now()
            if sim_end is not None:
                target = min(target, sim_end)
            slice_end = time.monotonic() + _SLICE_SECONDS
            busy = False
            while self.t + 1 <= target:
                self.step()
                if time.monotonic() >= slice_end:
                    busy = True
                    break
            if (sim_end is not None and self.t >= sim_end) or (real_end is not None and time.monotonic() >= real_end):
                break
            if busy:
                await asyncio.sleep(0.001)
                continue
            wait = min(max(clock.real_delay_until(self.t + 1), 0.01), 0.25)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    def finish_truth(self) -> GroundTruth:
        self.truth.end = self.t
        self.truth.injected = self.model.injected
        if self.files is not None:
            self.truth.files = [str(p) for p in self.files.paths]
        return self.truth

    def close(self) -> None:
        if not self.closed and self.files is not None:
            self.files.close()
        self.closed = True


def generate(scenario: Scenario | str | Path, out_dir: Path | str | None, minutes: float | None = None, *,
             seed: int = 1, config: SimConfig | None = None,
             start: datetime | int | float | str | None = None) -> GroundTruth:
    """One call: simulate `scenario` into `out_dir` (None: no files) and return the ground truth."""
    return Simulator(scenario, out_dir, config=config, seed=seed, start=start).generate(minutes)

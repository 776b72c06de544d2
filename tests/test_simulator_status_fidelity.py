"""/status of the simulator against PMTA 5.0's: the `traffic/perf` block, and `bounceProcessed` /
`feedbackLoopProcessed` counting what the bounce and FBL processors handled (pmta-http-api.md §4.3;
pmta-formats.md §1.1: rb/rs records come from the bounce processor, f records from the feedback-loop processor)."""

from __future__ import annotations

import bisect
import csv
import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.pmta_api import parse_envelope
from simulator import SimConfig, Simulator
from simulator.api import MonitorData, build_app

FIXTURES = Path(__file__).parent / "testdata" / "pmta_api"
PROCESSORS = {"bounceProcessed": ("rb", "rs"), "feedbackLoopProcessed": ("f",)}


def _written(directory: Path) -> dict[str, list[int]]:
    """Epoch timeLogged of every record in the accounting files, by record type."""
    out: dict[str, list[int]] = {}
    for path in sorted(directory.glob("*.csv")):
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                ts = datetime.strptime(row["timeLogged"], "%Y-%m-%d %H:%M:%S%z").timestamp()
                out.setdefault(row["type"], []).append(int(ts))
    for times in out.values():
        times.sort()
    return out


def _in_window(times: list[int], now: int, size: int) -> int:
    """Records logged in the `size` seconds up to and including `now`: the rolling windows' ticks now-size+1..now."""
    return bisect.bisect_right(times, now) - bisect.bisect_right(times, now - size)


def _top(times: list[int], size: int, end: int) -> int:
    """Highest rolling-window count ever reached up to `end` (a window's count peaks when it ends on a record)."""
    return max((_in_window(times, t, size) for t in times if t <= end), default=0)


def _merged(written: dict[str, list[int]], types: tuple[str, ...]) -> list[int]:
    return sorted(t for typ in types for t in written.get(typ, []))


def _skeleton(value: Any) -> Any:
    """Names and nesting only (element order kept), values dropped."""
    if isinstance(value, dict):
        return [(k, _skeleton(v)) for k, v in value.items()]
    return None


def _xml_skeleton(elem: ET.Element) -> Any:
    return [(c.tag, _xml_skeleton(c) if len(c) else None) for c in elem]


async def _bodies(sim: Simulator) -> dict[str, bytes]:
    transport = httpx.ASGITransport(app=build_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        return {fmt: (await http.get("/status", params={"format": fmt})).content for fmt in ("xml", "json")}


# --- bounceProcessed / feedbackLoopProcessed -------------------------------------------------------

@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Simulator, dict[str, list[int]]]:
    """The reviewer's case: connection-failures, seed 1, 120 simulated minutes (rs 14, rb 11, f 1 written)."""
    out = tmp_path_factory.mktemp("failures")
    sim = Simulator("connection-failures", out, seed=1)
    sim.generate(120)
    return sim, _written(out)


def test_processed_totals_equal_the_records_written(failures: tuple[Simulator, dict[str, list[int]]]) -> None:
    sim, written = failures
    counts = {typ: len(written.get(typ, [])) for typ in ("rb", "rs", "f")}
    assert counts == {"rs": 14, "rb": 11, "f": 1}
    assert {typ: sum(n for k, n in sim.truth.records.items() if k.type == typ) for typ in counts} == counts
    total = MonitorData(sim).status()["status"]["traffic"]["total"]
    assert total["bounceProcessed"] == counts["rb"] + counts["rs"] == 25
    assert total["feedbackLoopProcessed"] == counts["f"] == 1


def test_processed_windows_follow_the_rolling_windows(failures: tuple[Simulator, dict[str, list[int]]]) -> None:
    sim, written = failures
    traffic = MonitorData(sim).status()["status"]["traffic"]
    for name, types in PROCESSORS.items():
        times = _merged(written, types)
        assert traffic["lastHr"][name] == _in_window(times, sim.t, 3600), name
        assert traffic["lastMin"][name] == _in_window(times, sim.t, 60), name
        assert traffic["topPerHr"][name] == _top(times, 3600, sim.t), name
        assert traffic["topPerMin"][name] == _top(times, 60, sim.t), name
    assert 0 < traffic["lastHr"]["bounceProcessed"] < traffic["total"]["bounceProcessed"]


def test_processed_windows_at_every_checkpoint_of_a_busy_run(tmp_path: Path) -> None:
    """Many rb/rs/f records a minute: each window checked at several moments against the files written."""
    cfg = SimConfig(seed=3, remote_bounce_scale=40.0, complaint_rate=0.05, fbl_delay=(60.0, 900.0),
                    rb_delay=(30.0, 600.0))
    sim = Simulator("baseline", tmp_path, config=cfg)
    data = MonitorData(sim)
    seen: list[tuple[int, dict[str, Any]]] = []
    for minute in (5, 11, 17, 30, 47, 61, 75, 90):
        sim.run_until(sim.start + minute * 60 - 1)
        seen.append((sim.t, data.status()["status"]["traffic"]))
    sim.close()
    written = _written(tmp_path)
    assert len(written["rb"]) > 200 and len(written["rs"]) > 20 and len(written["f"]) > 200
    for now, traffic in seen:
        for name, types in PROCESSORS.items():
            times = _merged(written, types)
            expected = {"total": _in_window(times, now, 10**9), "lastHr": _in_window(times, now, 3600),
                        "lastMin": _in_window(times, now, 60), "topPerHr": _top(times, 3600, now),
                        "topPerMin": _top(times, 60, now)}
            assert {w: traffic[w][name] for w in expected} == expected, (now, name)
    assert any(traffic["lastMin"]["bounceProcessed"] and traffic["lastMin"]["feedbackLoopProcessed"]
               for _, traffic in seen)
    late = seen[-1][1]
    assert late["lastHr"]["bounceProcessed"] < late["total"]["bounceProcessed"]  # the hour window has rolled


async def test_processed_counts_render_the_same_in_xml_and_json(
        failures: tuple[Simulator, dict[str, list[int]]]) -> None:
    sim, _ = failures
    bodies = await _bodies(sim)
    traffic = MonitorData(sim).status()["status"]["traffic"]
    xml = ET.fromstring(bodies["xml"]).find("data/status/traffic")
    js = json.loads(bodies["json"])["data"]["status"]["traffic"]
    assert xml is not None
    for window in ("total", "lastHr", "lastMin", "topPerHr", "topPerMin"):
        for name in PROCESSORS:
            assert xml.findtext(f"{window}/{name}") == str(traffic[window][name])
            assert js[window][name] == traffic[window][name]
    assert js["total"]["bounceProcessed"] == 25 and js["total"]["feedbackLoopProcessed"] == 1


# --- traffic/perf -------------------------------------------------------------------------------------

async def test_perf_block_has_the_reference_shape_in_xml_and_json(
        failures: tuple[Simulator, dict[str, list[int]]]) -> None:
    sim, _ = failures
    bodies = await _bodies(sim)
    ref_xml = ET.parse(FIXTURES / "status-5.0r1.xml").getroot().find("data/status/traffic")
    ref_json = json.loads((FIXTURES / "status-5.0b1.json").read_text())["data"]["status"]["traffic"]
    sim_xml = ET.fromstring(bodies["xml"]).find("data/status/traffic")
    sim_json = json.loads(bodies["json"])["data"]["status"]["traffic"]
    assert ref_xml is not None and sim_xml is not None
    assert _xml_skeleton(sim_xml) == _xml_skeleton(ref_xml)
    assert _skeleton(sim_json) == _skeleton(ref_json)
    assert _xml_skeleton(sim_xml)[-1] == ("perf", [("lastMin", [("in", [
        ("count", None), ("mailFromTime", None), ("dataTime", None), ("totalTime", None)])])])
    perf = sim_json["perf"]["lastMin"]["in"]
    assert all(type(v) is int for v in perf.values())  # integers, as both samples print them
    assert {k: sim_xml.findtext(f"perf/lastMin/in/{k}") for k in perf} == {k: str(v) for k, v in perf.items()}
    assert parse_envelope(bodies["xml"], "xml")["status"]["traffic"]["perf"] == {
        k: {kk: {kkk: str(vvv) for kkk, vvv in vv.items()} for kk, vv in v.items()}
        for k, v in sim_json["perf"].items()}


def test_perf_numbers_follow_the_simulated_inbound_traffic(
        failures: tuple[Simulator, dict[str, list[int]]]) -> None:
    sim, _ = failures
    traffic = MonitorData(sim).status()["status"]["traffic"]
    perf = traffic["perf"]["lastMin"]["in"]
    assert perf["count"] == traffic["lastMin"]["in"]["msg"] > 0
    assert 0 < perf["mailFromTime"] < perf["dataTime"]
    assert perf["totalTime"] > perf["mailFromTime"] + perf["dataTime"]
    assert perf["totalTime"] < 1000  # ms per message from a LAN injector, not seconds


def test_perf_is_zero_on_an_idle_host_as_in_the_samples() -> None:
    sim = Simulator("baseline", None)
    perf = MonitorData(sim).status()["status"]["traffic"]["perf"]
    assert perf == {"lastMin": {"in": {"count": 0, "mailFromTime": 0, "dataTime": 0, "totalTime": 0}}}


def test_perf_data_time_grows_with_message_size() -> None:
    times = []
    for kb in (5, 5000):
        sim = Simulator("baseline", None, config=SimConfig(message_kb=(kb, kb)))
        sim.run_until(sim.start + 300)
        perf = MonitorData(sim).status()["status"]["traffic"]["perf"]["lastMin"]["in"]
        times.append((perf["dataTime"], perf["totalTime"] - perf["dataTime"]))
    (small, small_rest), (big, big_rest) = times
    assert big > 10 * small and small_rest == big_rest  # the payload moves dataTime; the envelope does not


def test_reading_status_does_not_change_the_output(tmp_path: Path) -> None:
    a = Simulator("complaint-creep", tmp_path / "a", seed=2)
    b = Simulator("complaint-creep", tmp_path / "b", seed=2)
    data = MonitorData(b)
    for minute in range(1, 31):
        a.run_until(a.start + minute * 60)
        b.run_until(b.start + minute * 60)
        data.status()
    a.close()
    b.close()
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}

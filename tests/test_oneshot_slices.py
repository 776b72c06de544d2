"""oneshot with the correlator on commits in bounded slices (memory independent of input size),
overlapped with reading, and prints exactly what one big commit would."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.corpus import make_corpus
from correlator import attribution
from exporter import daemon
from exporter.config import config_from_dict
from exporter.state import StateStore


def _config(logs: Path, state: Path) -> dict:
    return {
        "sources": [
            {"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d", "b"]},
            {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t", "tq"]},
            {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]},
        ],
        "state_dir": str(state), "listen": "127.0.0.1:9", "correlator": {"enabled": True},
        "tail": {"chunk_bytes": 16384},
    }


def _run(cfg: dict, monkeypatch: pytest.MonkeyPatch, slice_rows: int) -> tuple[str, list[int]]:
    sizes: list[int] = []
    commit = StateStore.commit

    async def recording(self: StateStore, c: daemon.Commit) -> None:
        sizes.append(c.rows)
        await commit(self, c)

    monkeypatch.setattr(StateStore, "commit", recording)
    monkeypatch.setattr(daemon, "ONESHOT_SLICE_ROWS", slice_rows)
    out = daemon.run_oneshot(config_from_dict(cfg))
    monkeypatch.undo()
    return out, sizes


def _stable(text: str) -> list[str]:
    """The exposition without process self-metrics that differ between two runs."""
    return sorted(line for line in text.splitlines()
                  if line.startswith("pmta_") or line.startswith("watchtower_records_"))


@pytest.fixture(scope="module")
def sliced_2000(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, int], str, list[int]]:
    """A 2,000-record corpus, its config and its oneshot in slices of 300 rows (page, slice sizes): the first two
    tests below each made and ran exactly this, with nothing patched, and neither changes the files."""
    tmp = tmp_path_factory.mktemp("sliced")
    counts = make_corpus(tmp / "logs", 2000)
    cfg = _config(tmp / "logs", tmp / "state")
    with pytest.MonkeyPatch.context() as monkeypatch:
        sliced, sizes = _run(cfg, monkeypatch, 300)
    return cfg, counts, sliced, sizes


def test_oneshot_commits_bounded_slices_with_the_same_result(
        sliced_2000: tuple[dict, dict[str, int], str, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, counts, sliced, sizes = sliced_2000
    whole, one = _run(cfg, monkeypatch, 10**9)
    chunk_rows = 16384 // 100  # no row of the corpus is shorter than 100 bytes
    assert len(one) == 1 and len(sizes) > 5
    assert sum(sizes) == sum(one) == counts["acct"] + counts["diag"] + counts["fbl"]
    assert max(sizes) <= 300 + chunk_rows  # reading stops between chunks once a slice is full
    assert _stable(sliced) == _stable(whole)
    complaints = [line for line in _stable(sliced) if line.startswith("pmta_complaints_total{")]
    assert complaints and any('vmta="unknown"' not in line for line in complaints)  # attributed across slices


def test_oneshot_looks_every_report_up_whatever_the_daemon_s_budget(
        sliced_2000: tuple[dict, dict[str, int], str, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon answers a batch's reports from memory only once their store lookups have cost SEEK_BUDGET index
    seeks; a oneshot looks every one up, so what it prints does not depend on when its slices were committed."""
    cfg, _counts, expected, _sizes = sliced_2000  # deliveries committed (out of memory) before their reports
    monkeypatch.setattr(attribution, "SEEK_BUDGET", 0)
    budgeted, _sizes = _run(cfg, monkeypatch, 300)
    complaints = [line for line in _stable(budgeted) if line.startswith("pmta_complaints_total{")]
    assert sum('vmta="unknown"' not in line for line in complaints) >= 3
    assert _stable(budgeted) == _stable(expected)


def test_oneshot_prints_what_a_store_with_history_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """oneshot's store is deleted at exit and only attribution reads it: it keeps no history (events, flows,
    search indexes), and prints exactly what it printed with one."""
    logs = tmp_path / "logs"
    make_corpus(logs, 3000)
    cfg = _config(logs, tmp_path / "state")
    monkeypatch.setattr(daemon, "ONESHOT_KEEPS_HISTORY", True)
    with_history, _sizes = _run(cfg, monkeypatch, 500)
    assert daemon.ONESHOT_KEEPS_HISTORY is False
    without, _sizes = _run(cfg, monkeypatch, 500)
    complaints = [line for line in _stable(without) if line.startswith("pmta_complaints_total{")]
    assert sum('vmta="unknown"' not in line for line in complaints) >= 3
    assert _stable(without) == _stable(with_history)

"""Records whose timeLogged or timeQueued is no time PMTA writes are counted as `bad_timestamp` and logged with
their file and line like every other parse error, rate-limited the same way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, write_config

HEADER = "type,timeLogged,timeQueued,rcpt,vmta"


def _oneshot(tmp_path: Path, **source: object) -> subprocess.CompletedProcess[str]:
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(tmp_path / "logs" / "*.csv")], **source}])
    return subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(cfg)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def _count(out: str) -> float:
    m = re.search(r'^watchtower_parse_errors_total\{reason="bad_timestamp",source="acct"\} (\S+)$', out, re.M)
    assert m is not None
    return float(m.group(1))


def test_bad_timestamps_are_logged_with_file_and_line(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "ts.csv"
    path.write_text(f"{HEADER}\n"
                    "d,12/06/2024 08:00,2024-06-12 07:59:00+0000,a@gmail.com,v1\n"
                    "d,2024-06-12 08:00:00+0000,2024-06-12 07:59:00+0000,b@gmail.com,v1\n"
                    "d,2024-06-12 08:00:00+0000,garbage,c@gmail.com,v1\n")
    proc = _oneshot(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _count(proc.stdout) == 2
    logged = [line for line in proc.stderr.splitlines() if "bad_timestamp" in line]
    assert len(logged) == 2, proc.stderr
    assert f"{path}:2: bad_timestamp (source acct)" in logged[0] and "12/06/2024 08:00" in logged[0]
    assert f"{path}:4: bad_timestamp (source acct)" in logged[1] and "garbage" in logged[1]


def test_bad_timestamps_are_rate_limited_like_other_parse_errors(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "ts.csv"
    path.write_text(f"{HEADER}\n" + "".join(f"d,never{i},2024-06-12 07:59:00+0000,u{i}@gmail.com,v1\n"
                                            for i in range(500)))
    proc = _oneshot(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _count(proc.stdout) == 500
    logged = [line for line in proc.stderr.splitlines() if "bad_timestamp" in line]
    assert len(logged) == 10, proc.stderr  # ErrorLog's burst
    assert f"{path}:2: bad_timestamp" in logged[0] and f"{path}:11: bad_timestamp" in logged[9]


def _logs(tmp_path: Path, text: str) -> Path:
    """One accounting file of `text` under tmp_path/logs, where `_oneshot` reads."""
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "ts.csv"
    path.write_text(text)
    return path


def _bad_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "bad_timestamp" in line]


def _series(out: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(name + "{"))


def test_a_time_queued_further_back_than_any_queue_keeps_is_a_bad_timestamp_not_a_delay(tmp_path: Path):
    """epoch 0 (`0` with iso-times off, `1970-01-01 ...`) or a broken clock put timeQueued decades back: observed,
    one record added 56 years to the delay histogram's sum, and an average-delay panel showed years for minutes.
    Such a record counts as delivered (or deferred) without a delay, and is a logged `bad_timestamp`."""
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "ts.csv"
    path.write_text(f"{HEADER}\n"
                    "d,2024-06-12 08:00:00+0000,2024-06-12 07:59:00+0000,a@gmail.com,v1\n"  # 60 s
                    "d,2024-06-12 08:00:00+0000,1970-01-01 00:00:00+0000,b@gmail.com,v1\n"  # epoch 0
                    "d,1718179200,0,c@gmail.com,v1\n"  # epoch 0, iso-times off
                    "t,2024-06-12 08:00:00+0000,2023-06-10 08:00:00+0000,d@gmail.com,v1\n"  # 368 days
                    "t,2024-06-12 08:00:00+0000,2024-04-28 08:00:00+0000,e@gmail.com,v1\n"  # 45 days: kept
                    "d,2024-06-12 08:00:00+0000,2024-06-12 08:01:00+0000,f@gmail.com,v1\n")  # skew: 0 as before
    proc = _oneshot(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert _series(out, "pmta_delivered_total") == 4
    assert _series(out, "pmta_deferred_total") == 2
    assert _series(out, "pmta_delivery_delay_seconds_count") == 2
    assert _series(out, "pmta_delivery_delay_seconds_sum") == 60
    assert _series(out, "pmta_deferral_age_seconds_count") == 1
    assert _series(out, "pmta_deferral_age_seconds_sum") == 45 * 86400
    assert _count(out) == 3
    assert _series(out, "watchtower_negative_delays_total") == 1
    logged = [line for line in proc.stderr.splitlines() if "bad_timestamp" in line]
    assert [line.split(": bad_timestamp")[0].split(": ")[-1] for line in logged] == [f"{path}:3", f"{path}:4",
                                                                                     f"{path}:5"]
    assert "timeQueued 1970-01-01 00:00:00+0000" in logged[0] and "more than 366 days" in logged[0]


def test_a_time_queued_decades_after_its_time_logged_is_a_bad_timestamp_too(tmp_path: Path):
    """The same bound both ways: a clock decades ahead is no skew of seconds (which counts as a negative delay,
    observed as 0), and must not pull the delay quantiles to 0 unnoticed."""
    path = _logs(tmp_path, f"{HEADER}\n"
                 "d,2024-06-12 08:00:00+0000,2099-01-01 00:00:00+0000,a@gmail.com,v1\n"
                 "d,2024-06-12 08:00:00+0000,2024-06-12 08:01:00+0000,b@gmail.com,v1\n")
    proc = _oneshot(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert _series(out, "pmta_delivered_total") == 2
    assert _series(out, "pmta_delivery_delay_seconds_count") == 1
    assert _series(out, "watchtower_negative_delays_total") == 1
    assert _count(out) == 1
    logged = _bad_lines(proc.stderr)
    assert len(logged) == 1 and f"{path}:2: bad_timestamp" in logged[0] and "2099-01-01" in logged[0]


def test_bounces_and_queue_deferrals_carry_the_newest_record_time_and_their_bad_time_logged(tmp_path: Path):
    """`watchtower_last_record_timestamp_seconds` is the timeLogged of the newest record read, whatever its type:
    a source that reads only b or tq records is not silent, and a broken timeLogged there is a bad_timestamp."""
    path = _logs(tmp_path, "type,timeLogged,timeQueued,rcpt,vmta,queue\n"
                 "b,2024-06-12 08:00:00+0000,2024-06-12 07:59:00+0000,a@gmail.com,v1,\n"
                 "tq,2024-06-12 09:00:00+0000,,,,gmail.com/v1\n"
                 "tq,yesterday,,,,gmail.com/v1\n")
    proc = _oneshot(tmp_path, records=["b", "tq"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert 'watchtower_last_record_timestamp_seconds{source="acct"} 1.7181828e+09' in out
    assert _count(out) == 1
    logged = _bad_lines(proc.stderr)
    assert len(logged) == 1 and f"{path}:4: bad_timestamp" in logged[0] and "yesterday" in logged[0]


REFERENCE_D = ("d,2014-08-24 16:00:14+0530,2014-07-10 16:00:02+0530,,Emailstatements.cards@hdfcbank.net,"
               "VJAYPRAKASH@YMAIL.COM,,relayed,2.0.0 (success),smtp;250 ok dirdel,mta7.am0.yahoodns.net (66.196.118.35),"
               "success,smtp,hbdpstmt3.hdfcbank.com (202.154.168.163),smtp,172.30.149.109,66.196.118.35,"
               '"PIPELINING,8BITMIME,SIZE,STARTTLS",155704,CAMPAIGN,,')
OLD_HEADER = ("type,timeLogged,timeQueued,timeImprinted,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,"
              "srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId")


def test_the_reference_d_sample_queued_45_days_is_a_delay_not_a_bad_timestamp():
    """pmta-formats.md §4's real `d` line (old 22-column header) was queued 45 days before it was logged: a site's
    `bounce-after` can be that long. It counts, with its delay, and no bad_timestamp."""
    from prometheus_client import CollectorRegistry

    from exporter.aggregate import RecordAggregator
    from exporter.classify.isp import IspClassifier
    from exporter.metrics import SelfMetrics
    from exporter.parser import FileParser

    parser = FileParser("acct", "/x/acct.csv", None)
    batch, _ = parser.parse(f"{OLD_HEADER}\n{REFERENCE_D}\n".encode())
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    agg = RecordAggregator(IspClassifier.load().classify, lambda *a: "other", buckets=[86_400.0 * 30, 86_400.0 * 60],
                           self_metrics=metrics)
    agg.apply(batch)
    agg.flush()
    assert parser.errors == {}
    assert registry.get_sample_value("watchtower_parse_errors_total",
                                     {"source": "acct", "reason": "bad_timestamp"}) in (None, 0.0)
    key = ("CAMPAIGN", "none", "yahoo")
    assert agg.counters["pmta_delivered_total"] == {key: 1}
    hist = agg.histograms["pmta_delivery_delay_seconds"][key]
    assert hist == [0.0, 1.0, 0.0, 45 * 86_400.0 + 12.0]  # (<=30d, <=60d, +Inf, sum)


def test_the_last_record_gauge_never_runs_ahead_of_the_clock(tmp_path: Path):
    """A record stamped 20 hours ahead (a PMTA host's clock before NTP synced it) held the gauge 20 hours in the
    future: `time() - gauge` stayed negative (fresh) for that long even once tailing had stopped."""
    import time as clock
    from datetime import UTC, datetime

    def stamp(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S+0000")

    (tmp_path / "logs").mkdir()
    before = clock.time()
    (tmp_path / "logs" / "ahead.csv").write_text(
        f"{HEADER}\nd,{stamp(before + 20 * 3600)},{stamp(before + 20 * 3600 - 60)},a@gmail.com,v1\n"
        f"d,{stamp(before - 5)},{stamp(before - 65)},b@gmail.com,v1\n")
    proc = _oneshot(tmp_path)
    after = clock.time()
    assert proc.returncode == 0, proc.stderr
    m = re.search(r'^watchtower_last_record_timestamp_seconds\{source="acct"\} (\S+)$', proc.stdout, re.M)
    assert m is not None, proc.stdout
    assert int(before) <= float(m.group(1)) <= after + 1

"""The simulator's r, rs and hidden-recipient f records and PMTA's own connection failures, written by its writer and
read back by the exporter's parser and aggregator: no parse error, and the counts its ground truth holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from exporter.aggregate import RecordAggregator
from exporter.classify.isp import IspClassifier
from exporter.classify.replies import ReplyClassifier
from exporter.parser import FileParser
from simulator import SimConfig, Simulator
from simulator.config import FileSpec
from simulator.truth import GroundTruth

FILES = [FileSpec(name="acct", records=["d", "b"]), FileSpec(name="diag", records=["t", "tq"]),
         FileSpec(name="fbl", records=["f"]), FileSpec(name="bounce", records=["rb", "rs"]),
         FileSpec(name="recv", records=["r"])]


def read_back(directory: Path) -> tuple[RecordAggregator, dict[str, int]]:
    """Every file the simulator wrote, acct first (its deliveries teach the MX of hosted domains), through the
    exporter's parser and aggregator as the daemon builds them (shipped tables, no correlator)."""
    isp, replies = IspClassifier.load(), ReplyClassifier.load()
    agg = RecordAggregator(isp.classify, replies.classify, buckets=[1.0, 60.0])
    errors: Counter[str] = Counter()
    for family in ("acct", "diag", "fbl", "bounce", "recv"):
        for path in sorted(directory.glob(f"{family}-*.csv")):
            parser = FileParser(family, str(path), None)
            batch, _ = parser.parse(path.read_bytes())
            errors.update(parser.errors)
            if batch is not None:
                agg.apply(batch)
    agg.flush()
    return agg, dict(errors)


def summed(series: dict[tuple[str, ...], float], *positions: int) -> dict[tuple[str, ...], float]:
    out: Counter[tuple[str, ...]] = Counter()
    for key, n in series.items():
        out[tuple(key[i] for i in positions)] += n
    return dict(out)


@pytest.fixture(scope="module")
def complaints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GroundTruth]:
    out = tmp_path_factory.mktemp("records")
    cfg = SimConfig(rate=4, files=FILES, complaint_rate=0.01, fbl_delay=(60, 600), rb_delay=(60, 600),
                    remote_bounce_scale=20)
    return out, Simulator("baseline", out, config=cfg).generate(60)


def test_r_and_rs_records_are_read_without_errors_and_counted(complaints: tuple[Path, GroundTruth]) -> None:
    out, truth = complaints
    agg, errors = read_back(out)
    assert errors == {}
    assert truth.count(type="r") == truth.injected > 10_000
    assert agg.counters["pmta_received_total"] == {("none", "none"): truth.count(type="r")}  # no vmta field
    rs = agg.counters["pmta_remote_status_total"]
    assert summed(rs, 3) == {(action,): float(n) for (action,), n in truth.by("klass", type="rs").items()}
    assert summed(rs, 2) == {(isp,): float(n) for (isp,), n in truth.by("isp", type="rs").items()}
    assert set(truth.by("klass", type="rs")) == {("delayed",), ("delivered",)}
    rb = agg.counters["pmta_remote_bounced_total"]
    assert summed(rb, 2) == {(isp,): float(n) for (isp,), n in truth.by("isp", type="rb").items()}


def test_hidden_recipient_complaints_are_microsoft_by_their_reporting_mta(complaints: tuple[Path, GroundTruth],
                                                                          ) -> None:
    """Hotmail hides the recipient (pmta-formats.md §1.2, §3.3): some Microsoft complaints carry none, and the
    exporter places them by `dns; hotmail.com`, so every complaint counts under the provider the truth has."""
    out, truth = complaints
    fbl = [line.split(",") for p in sorted(out.glob("fbl-*.csv")) for line in p.read_text().splitlines()[1:]]
    hidden = [row for row in fbl if row[3] == ""]
    assert hidden and {row[8] for row in hidden} == {"dns; hotmail.com"}
    assert 0 < len(hidden) < truth.count(type="f", isp="microsoft")
    agg, errors = read_back(out)
    assert errors == {}
    got = summed(agg.counters["pmta_complaints_total"], 2)
    assert got == {(isp,): float(n) for (isp,), n in truth.by("isp", type="f").items()}
    assert got[("microsoft",)] > len(hidden)


def test_pmtas_own_connection_failures_are_network(tmp_path: Path) -> None:
    """connection-failures: ECONNREFUSED and DNS failures on connect (tq), ETIMEDOUT and EDISCON mid-session (t),
    all the exporter's `network` class (rules network-errno and dns-temporary), as many as the truth has."""
    truth = Simulator("connection-failures", tmp_path, config=SimConfig(rate=6)).generate(40)
    by_reply = truth.by("type", "reply", klass="network")
    assert set(by_reply) == {("tq", "pmta.econnrefused"), ("tq", "pmta.dns_failed"), ("t", "pmta.etimedout"),
                             ("t", "pmta.ediscon")} and min(by_reply.values()) > 10
    diag = [line for p in sorted(tmp_path.glob("diag-*.csv")) for line in p.read_text().splitlines()[1:]]
    assert any(",ECONNREFUSED connecting to orange.fr (" in line for line in diag)
    assert any(",StatusDnsQueryFailed resolving " in line for line in diag)
    agg, errors = read_back(tmp_path)
    assert errors == {}
    deferred = summed(agg.counters["pmta_deferred_total"], 2, 3)  # (isp, class)
    want = {k: float(n) for k, n in truth.by("isp", "klass", type=("t", "tq")).items()}
    assert {k for k in want if k[1] == "network"} == {("orange", "network"), ("other", "network"),
                                                      ("mailru", "network"), ("yandex", "network")}
    assert deferred == want


def test_a_dns_failure_names_no_mx_where_pmta_resolved_none(tmp_path: Path) -> None:
    """`StatusDnsQueryFailed resolving DOMAIN` (pmta-formats.md §4.1): no MX was resolved, so PMTA has no host or
    address to write. The simulator wrote the domain's first MX in dsnMta and dlvDestinationIp, information real logs
    lack (it taught the daemon a hosted domain's provider no real record would)."""
    import csv

    Simulator("connection-failures", tmp_path, config=SimConfig(rate=6)).generate(40)
    rows = [r for p in sorted(tmp_path.glob("diag-*.csv")) for r in csv.DictReader(p.open(newline=""))]
    dns = [r for r in rows if r["dsnDiag"].startswith("StatusDnsQueryFailed")]
    refused = [r for r in rows if r["dsnDiag"].startswith("ECONNREFUSED")]
    assert dns and refused
    assert {(r["dsnMta"], r["dlvDestinationIp"]) for r in dns} == {("", "")}
    assert all(r["dsnMta"] and r["dlvDestinationIp"] for r in refused)


def test_complaints_timed_by_arrival_date_are_placed_as_those_timed_by_time_logged(tmp_path: Path) -> None:
    """The f time column is UNCERTAIN (pmta-formats.md §1.2: `timeLogged` seen, `arrivalDate` not confirmed), and
    PMTA writes no Message-Id by default (§3.4): the correlator then places a complaint by rcpt + orig in a window
    around the report's time. Both forms, same seed: the same VMTA for every complaint, and most of them placed."""
    from exporter.config import CorrelatorConfig
    from simulator.config import FileSpec
    from tests.test_correlator_support import Harness

    placed = {}
    for column in ("timeLogged", "arrivalDate"):
        out = tmp_path / column
        fbl_fields = ["*"] if column == "timeLogged" else ["*", "!timeLogged", "arrivalDate"]
        files = [FileSpec(name="acct", records=["d", "b"], fields=["*"]),
                 FileSpec(name="fbl", records=["f"], fields=fbl_fields)]
        cfg = SimConfig(rate=4, files=files, complaint_rate=0.01, fbl_delay=(60, 600))
        truth = Simulator("baseline", out, config=cfg).generate(30)
        (fbl,) = sorted(out.glob("fbl-*.csv"))
        assert column in fbl.read_text().splitlines()[0].split(",")
        # read 20 days later (a backfill): the window must come from the report's own time, not the clock's
        h = Harness(out, CorrelatorConfig(retention="30d"), clock=lambda end=truth.end: end + 20 * 86_400.0)
        for path in sorted(out.glob("acct-*.csv")):
            h.commit(batch_of(path))
        reports = batch_of(fbl)
        named = [bool(row[reports.columns.rcpt]) for row in reports.rows]  # Hotmail hides some recipients
        placed[column] = [(vp and vp[0], has) for vp, has in zip(h.sink.lookup_vmta(reports.columns, reports.rows),
                                                                  named, strict=True)]
        h.close()
    assert placed["timeLogged"] == placed["arrivalDate"]
    assert all(bool(vmta) == has for vmta, has in placed["arrivalDate"])  # every report naming its recipient
    assert sum(has for _, has in placed["arrivalDate"]) > 10


def batch_of(path: Path):  # type: ignore[no-untyped-def]
    from tests.test_correlator_support import batch

    return batch(str(path), path.read_text())

"""How the aggregator folds a chunk changes nothing a reader can see.

run_in_background() (a worker thread) and the two merge strategies (a Python loop for small chunks,
labelled polars group-bys for big ones) give the same series, in the same order, with the same
label-cap admissions and self-metrics, on a varied corpus; errors raised while folding in the
background reach the next reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bench.corpus import make_corpus
from exporter import aggregate
from exporter.aggregate import RecordAggregator
from exporter.classify import IspClassifier, ReplyClassifier
from exporter.metrics import SelfMetrics
from exporter.parser import FileParser
from tests.test_aggregate import batch_of, class_of, isp_of, make


def _batches(directory: Path, chunk: int = 64 * 1024) -> list:
    out = []
    for path in sorted(directory.glob("*.csv")):
        data = path.read_bytes()
        parser = FileParser(path.name.split("-")[0], str(path), None)
        pos = 0
        while pos < len(data):
            end = data.rfind(b"\n", pos, pos + chunk) + 1 or len(data)
            batch, _ = parser.parse(data[pos:end])
            pos = end
            if batch is not None:
                out.append(batch)
    return out


def _aggregate(batches: list, background: bool = False, derive_here: bool = False, pipelined: bool = False) -> bytes:
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    for source in ("acct", "diag", "fbl"):
        metrics.init_source(source)
    agg = RecordAggregator(IspClassifier.load().classify, ReplyClassifier.load().classify,
                           buckets=[10.0, 60.0, 600.0], max_vmtas=40, max_pools=6, max_senders=7,
                           self_metrics=metrics)
    registry.register(agg)
    if background:
        assert agg.run_in_background(derive_here=derive_here, pipelined=pipelined)
    for batch in batches:
        agg.apply(batch)
    agg.flush()
    try:
        return generate_latest(registry)
    finally:
        agg.close()


@pytest.fixture(scope="module")
def corpus_folded_inline(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, bytes]:
    """The 6,000-record corpus in 64 KiB chunks, and its page folded inline with the module's constants as they
    are: the reference of the tests below, which made it anew each (the same files, so the same batches and
    page); each folds these batches again, as each already did several times in a row."""
    directory = tmp_path_factory.mktemp("corpus")
    make_corpus(directory, 6000, files=2)
    batches = _batches(directory)
    return batches, _aggregate(batches, background=False)


def test_background_folding_equals_inline_folding(corpus_folded_inline: tuple[list, bytes]) -> None:
    batches, inline = corpus_folded_inline
    assert len(batches) > 20
    assert b'watchtower_label_overflow_total{label="vmta"}' in inline  # the caps were exercised
    assert _aggregate(batches, background=True) == inline
    assert _aggregate(batches, background=True, derive_here=True) == inline  # keys derived by the caller


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_pipelined_folding_equals_inline_folding(corpus_folded_inline: tuple[list, bytes],
                                                 monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    """oneshot's four threads (parse | derive+group | reply classes | label+merge), however far ahead the
    caller reads: the same series in the same order, the same cap admissions and self-metrics."""
    batches, inline = corpus_folded_inline
    monkeypatch.setattr(aggregate, "PIPELINE_DEPTH", depth)
    assert _aggregate(batches, background=True, pipelined=True) == inline
    monkeypatch.setattr(aggregate, "SMALL_GROUPS", 0)  # labelled polars group-bys, classes from the warm cache
    monkeypatch.setattr(aggregate, "SMALL_DELIVERED", 0)
    assert _aggregate(batches, background=True, pipelined=True) == _aggregate(batches)


def test_loop_and_polars_merges_give_the_same_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_corpus(tmp_path, 6000, files=2)
    batches = _batches(tmp_path, chunk=400 * 1024)
    monkeypatch.setattr(aggregate, "SMALL_GROUPS", 10**9)
    monkeypatch.setattr(aggregate, "SMALL_DELIVERED", 10**9)  # d groups merged by the loop as well
    loops = _aggregate(batches)
    monkeypatch.setattr(aggregate, "SMALL_DELIVERED", 0)  # d groups labelled in polars, merged deferred
    assert _aggregate(batches) == loops
    monkeypatch.setattr(aggregate, "SMALL_DELIVERED", 615)  # mixed: these chunks have 601-639 d groups
    assert _aggregate(batches) == loops
    monkeypatch.setattr(aggregate, "SMALL_GROUPS", 0)
    assert _aggregate(batches) == loops
    assert b"pmta_sender_deferred_total" in loops and b"pmta_deferral_age_seconds_bucket" in loops


@pytest.mark.parametrize("pipelined", [False, True])
def test_an_error_while_folding_reaches_the_next_reader(pipelined: bool) -> None:
    def broken(isp: str, status: str, diag: str, cat: str) -> str:
        raise RuntimeError("rule table exploded")

    _first_flush_raises(RecordAggregator(isp_of, broken, buckets=[1.0]), pipelined, "rule table exploded")


def _first_flush_raises(agg: RecordAggregator, pipelined: bool, message: str) -> None:
    """One deferral folded in the background: the error of the background thread surfaces at the flush."""
    assert agg.run_in_background(pipelined=pipelined)
    agg.apply(batch_of(["t,1000,900,a@s1.com,u@gmail.com,4.7.28,smtp;421 4.7.28 rate,,,,vmta-1,pool-a,q,"]))
    with pytest.raises(RuntimeError, match=message):
        agg.flush()
    agg.close()


def test_not_in_background_with_a_correlator_lookup() -> None:
    agg = RecordAggregator(isp_of, class_of, buckets=[1.0], lookup_vmta=lambda columns, rows, resume: [None] * len(rows))
    assert not agg.run_in_background()
    agg.apply(batch_of(["f,1000,,a@s1.com,u@yahoo.com,,,,,,,,,abuse"]))  # folded inline, lookup on this thread
    assert agg.counters["pmta_complaints_total"] == {("unknown", "unknown", "yahoo", "abuse"): 1}


@pytest.mark.parametrize("small_groups", [0, 10**9])
def test_times_only_pythons_parser_reads_are_folded_in(small_groups: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`2026-11-25T12:00:30+00:00` (no polars fast path) and junk: parsed or counted, either merge strategy."""
    monkeypatch.setattr(aggregate, "SMALL_GROUPS", small_groups)
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    agg = make(self_metrics=metrics)
    registry.register(agg)
    agg.apply(batch_of([
        "d,2026-11-25T12:00:30+00:00,2026-11-25T12:00:00+00:00,a@s1.com,u1@gmail.com,2.0.0,ok,,success,10,vmta-1,p,q,",
        "t,2026-11-25T13:00:00+00:00,2026-11-25 12:00:00+0000,a@s1.com,u2@gmail.com,4.7.28,421 4.7.28,,,,vmta-1,p,q,",
        "d,soon,2026-11-25 12:00:00+0000,a@s1.com,u3@gmail.com,2.0.0,ok,,success,10,vmta-1,p,q,",
    ]))
    get = registry.get_sample_value
    assert get("pmta_delivery_delay_seconds_bucket", {"vmta": "vmta-1", "vmta_pool": "p", "isp": "gmail",
                                                      "le": "60.0"}) == 1
    assert get("pmta_delivery_delay_seconds_sum", {"vmta": "vmta-1", "vmta_pool": "p", "isp": "gmail"}) == 30
    assert get("pmta_deferral_age_seconds_sum", {"vmta_pool": "p", "isp": "gmail"}) == 3600
    assert get("pmta_deferral_age_seconds_count", {"vmta_pool": "p", "isp": "gmail"}) == 1
    assert get("watchtower_parse_errors_total", {"source": "acct", "reason": "bad_timestamp"}) == 1


def test_an_error_while_grouping_reaches_the_next_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """pipelined: a failure on the grouping thread surfaces through the fold that waits for it."""
    def broken_group(*_args: object) -> None:
        raise RuntimeError("grouping exploded")

    monkeypatch.setattr(aggregate, "_group", broken_group)
    _first_flush_raises(RecordAggregator(isp_of, class_of, buckets=[1.0]), True, "grouping exploded")

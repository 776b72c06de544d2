"""RecordAggregator: exact series per record type, placeholders, caps, histograms and persistence."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from exporter.aggregate import RecordAggregator
from exporter.parser import FileParser

HEADER = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSize,vmta,vmtaPool,queue,feedbackType"


def isp_of(domain: str, mta: str) -> str:
    return {"gmail.com": "gmail", "yahoo.com": "yahoo"}.get(domain, "office365" if "outlook" in mta else "other")


def class_of(isp: str, status: str, diag: str, cat: str) -> str:
    return "throttled" if "4.7.28" in diag else ("user_unknown" if status.startswith("5.1.1") else "other")


def batch_of(lines: list[str]):
    batch, _ = FileParser("acct", "/x/a.csv", None).parse(("\n".join([HEADER, *lines]) + "\n").encode())
    return batch


def make(**kw) -> RecordAggregator:
    return RecordAggregator(isp_of, class_of, buckets=[1.0, 60.0, 3600.0], **kw)


def value(agg: RecordAggregator, name: str, **labels: str) -> float | None:
    reg = CollectorRegistry()
    reg.register(agg)
    return reg.get_sample_value(name, labels)


ROWS = [
    "d,2026-11-25 12:00:30+0000,2026-11-25 12:00:00+0000,a@s1.com,u1@gmail.com,2.0.0,ok,gmail-smtp-in.l.google.com (1.1.1.1),success,1000,vmta-1,pool-a,gmail.com/vmta-1,",
    "d,1764072000,1764071999,a@s1.com,u2@Gmail.COM,2.0.0,ok,,success,500,vmta-1,pool-a,gmail.com/vmta-1,",
    "d,2026-11-25 12:00:00+0000,2026-11-25 10:00:00+0000,a@s2.com,u3@corp.example,2.0.0,ok,corp.mail.protection.outlook.com (2.2.2.2),,7,,,corp.example/{default},",
    "t,2026-11-25 12:00:00+0000,2026-11-25 11:00:00+0000,a@s1.com,u4@gmail.com,4.7.28,smtp;421 4.7.28 rate,,,,vmta-1,pool-a,gmail.com/vmta-1,",
    "tq,2026-11-25 12:00:00+0000,,,,4.7.28,smtp;421 4.7.28 rate,,,,,pool-a,gmail.com/vmta-2,",
    "b,2026-11-25 12:00:00+0000,2026-11-25 11:00:00+0000,a@s1.com,u5@yahoo.com,5.1.1 (bad destination mailbox address),smtp;550,,bad-mailbox,,vmta-1,pool-a,yahoo.com/vmta-1,",
    "b,2026-11-25 12:00:00+0000,2026-11-25 11:00:00+0000,a@s1.com,u6@yahoo.com,5.0.0,x,,weird-cat,,vmta-1,pool-a,yahoo.com/vmta-1,",
    "f,2026-11-25 12:00:00+0000,,a@s1.com,u7@yahoo.com,,,,,,,,,abuse",
]


def test_each_record_type_lands_in_its_series_with_exact_labels():
    agg = make()
    agg.apply(batch_of(ROWS))
    assert value(agg, "pmta_delivered_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail") == 2
    assert value(agg, "pmta_delivered_total", vmta="none", vmta_pool="none", isp="office365") == 1
    assert value(agg, "pmta_delivered_bytes_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail") == 1500
    assert value(agg, "pmta_deferred_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail",
                 **{"class": "throttled"}) == 1
    # tq has no vmta column value: taken from the queue name domain/vmta
    assert value(agg, "pmta_deferred_total", vmta="vmta-2", vmta_pool="pool-a", isp="gmail",
                 **{"class": "throttled"}) == 1
    assert value(agg, "pmta_bounced_total", vmta="vmta-1", vmta_pool="pool-a", isp="yahoo",
                 category="bad-mailbox", **{"class": "user_unknown"}) == 1
    assert value(agg, "pmta_bounced_total", vmta="vmta-1", vmta_pool="pool-a", isp="yahoo",
                 category="unknown", **{"class": "other"}) == 1
    assert value(agg, "pmta_complaints_total", vmta="unknown", vmta_pool="unknown", isp="yahoo",
                 feedback_type="abuse") == 1
    assert value(agg, "pmta_sender_delivered_total", sender="s1.com", isp="gmail") == 2
    assert value(agg, "pmta_sender_bounced_total", sender="s1.com", isp="yahoo", **{"class": "user_unknown"}) == 1
    assert value(agg, "pmta_sender_complaints_total", sender="s1.com", isp="yahoo", feedback_type="abuse") == 1


def test_delay_histogram_buckets_are_cumulative_with_exact_sum():
    agg = make()
    agg.apply(batch_of(ROWS[:3]))
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    assert value(agg, "pmta_delivery_delay_seconds_bucket", le="1.0", **labels) == 1  # the 1 s one
    assert value(agg, "pmta_delivery_delay_seconds_bucket", le="60.0", **labels) == 2
    assert value(agg, "pmta_delivery_delay_seconds_bucket", le="+Inf", **labels) == 2
    assert value(agg, "pmta_delivery_delay_seconds_count", **labels) == 2
    assert value(agg, "pmta_delivery_delay_seconds_sum", **labels) == 31
    other = {"vmta": "none", "vmta_pool": "none", "isp": "office365"}
    assert value(agg, "pmta_delivery_delay_seconds_bucket", le="3600.0", **other) == 0
    assert value(agg, "pmta_delivery_delay_seconds_bucket", le="+Inf", **other) == 1


def test_vmta_cap_maps_new_values_to_overflow():
    agg = make(max_vmtas=1)
    agg.apply(batch_of([ROWS[0], ROWS[0].replace("vmta-1,pool-a", "vmta-9,pool-a")]))
    assert value(agg, "pmta_delivered_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail") == 1
    assert value(agg, "pmta_delivered_total", vmta="overflow", vmta_pool="pool-a", isp="gmail") == 1


def test_fixed_sender_list_maps_the_rest_to_other():
    agg = make(senders=["s2.com"])
    agg.apply(batch_of(ROWS[:3]))
    assert value(agg, "pmta_sender_delivered_total", sender="other", isp="gmail") == 2
    assert value(agg, "pmta_sender_delivered_total", sender="s2.com", isp="office365") == 1


def test_restore_from_dirty_snapshot_reproduces_the_exposition():
    agg = make()
    agg.apply(batch_of(ROWS))
    snapshot = agg.take_dirty()
    assert agg.take_dirty() == []
    again = make()
    for name, key, val in snapshot:
        again.restore(name, key, val)
    a, b = CollectorRegistry(), CollectorRegistry()
    a.register(agg)
    b.register(again)
    assert sorted(generate_latest(a).splitlines()) == sorted(generate_latest(b).splitlines())



def test_sender_complaints_are_split_by_feedback_type_as_the_isp_complaints_are():
    """A not-spam or auth-failure report is no complaint: the complaint-ratio rules leave them out by
    `feedback_type`, which the per-sender counter lacked (its ratio counted them)."""
    agg = make()
    rows = [f"f,2026-11-25 12:00:00+0000,,a@s1.com,u{i}@yahoo.com,,,,,,,,,{ft}"
            for i, ft in enumerate(["abuse", "abuse", "not-spam", "Auth-Failure", "", "bogus"])]
    agg.apply(batch_of(rows))
    got = {ft: value(agg, "pmta_sender_complaints_total", sender="s1.com", isp="yahoo", feedback_type=ft)
           for ft in ("abuse", "not-spam", "auth-failure", "unknown", "other")}
    assert got == {"abuse": 2, "not-spam": 1, "auth-failure": 1, "unknown": 1, "other": 1}


def test_a_series_persisted_before_its_metric_gained_a_label_is_restored_with_it_unknown():
    """An upgrade that adds a label (pmta_sender_complaints_total gained feedback_type) must not break the
    restart: the stored series comes back with the new label `unknown`, and counting goes on."""
    agg = make()
    agg.restore("pmta_sender_complaints_total", ("s1.com", "yahoo"), 5.0)
    agg.restore("pmta_sender_delivered_total", ("s1.com", "gmail", "extra"), 7.0)  # more labels than it has: dropped
    agg.apply(batch_of(["f,2026-11-25 12:00:00+0000,,a@s1.com,u1@yahoo.com,,,,,,,,,abuse"]))
    assert value(agg, "pmta_sender_complaints_total", sender="s1.com", isp="yahoo", feedback_type="unknown") == 5
    assert value(agg, "pmta_sender_complaints_total", sender="s1.com", isp="yahoo", feedback_type="abuse") == 1
    assert agg.series_counts()["pmta_sender_delivered_total"] == 0


def test_a_dirty_snapshot_keeps_its_values_while_the_series_change():
    """take_dirty hands over the histogram lists themselves (no copy): they must never change afterwards."""
    agg = make()
    agg.apply(batch_of(ROWS))
    snapshot = {(name, key): val for name, key, val in agg.take_dirty()}
    frozen = {k: list(v) if isinstance(v, list) else v for k, v in snapshot.items()}
    agg.apply(batch_of(ROWS))
    later = {(name, key): val for name, key, val in agg.take_dirty()}
    assert snapshot == frozen
    hist = ("pmta_delivery_delay_seconds", ("vmta-1", "pool-a", "gmail"))
    assert snapshot[hist][:4] == [1.0, 1.0, 0.0, 0.0] and later[hist][:4] == [2.0, 2.0, 0.0, 0.0]

def test_attribution_lookup_fills_vmta_of_complaints():
    agg = make(lookup_vmta=lambda cols, rows, resume: [("vmta-7", "pool-z")] * len(rows))
    agg.apply(batch_of(ROWS[-1:]))
    assert value(agg, "pmta_complaints_total", vmta="vmta-7", vmta_pool="pool-z", isp="yahoo",
                 feedback_type="abuse") == 1


def test_many_reports_are_folded_in_slices_whose_lookups_share_the_batch_budget(monkeypatch) -> None:
    """A 4 MiB chunk of an FBL file holds ~25k reports: their Python rows and lookup keys, built at once, took ~30 MB
    of a oneshot's peak. They are folded LATE_SLICE_ROWS at a time; every lookup after the batch's first says it
    resumes that batch (one budget), and a slice that needs no lookup does not count as the first."""
    import exporter.aggregate as aggregate

    monkeypatch.setattr(aggregate, "LATE_SLICE_ROWS", 3)
    calls: list[tuple[list[str], bool]] = []

    def lookup(cols, rows, resume):  # type: ignore[no-untyped-def]
        calls.append(([r[cols.rcpt] for r in rows], resume))
        return [("vmta-7", "pool-z")] * len(rows)

    def f(rcpt: str, vmta: str) -> str:
        return f"f,2026-11-25 12:00:00+0000,,a@s1.com,{rcpt},,,,,,{vmta},{'pool-a' if vmta else ''},,abuse"

    rows = [f("u1@yahoo.com", "vmta-1"), f("u2@yahoo.com", "vmta-1"), f("u3@yahoo.com", "vmta-1"),
            f("u4@yahoo.com", ""), f("u5@yahoo.com", "vmta-1"), f("u6@yahoo.com", ""),
            f("u7@yahoo.com", ""), f("u8@yahoo.com", ""), f("u9@yahoo.com", "vmta-1"), f("u10@yahoo.com", "")]
    agg = make(lookup_vmta=lookup)
    agg.apply(batch_of(rows))
    assert calls == [(["u4@yahoo.com", "u6@yahoo.com"], False), (["u7@yahoo.com", "u8@yahoo.com"], True),
                     (["u10@yahoo.com"], True)]
    assert value(agg, "pmta_complaints_total", vmta="vmta-7", vmta_pool="pool-z", isp="yahoo",
                 feedback_type="abuse") == 5
    assert value(agg, "pmta_complaints_total", vmta="vmta-1", vmta_pool="pool-a", isp="yahoo",
                 feedback_type="abuse") == 5
    calls.clear()
    agg.apply(batch_of(rows[3:5]))  # a batch of one slice: a fresh budget
    assert calls == [(["u4@yahoo.com"], False)]


def test_a_domain_placed_by_its_mx_keeps_its_isp_on_records_without_mx():
    from exporter.classify import IspClassifier

    isp = IspClassifier.load()
    agg = RecordAggregator(isp.classify, class_of, buckets=[1.0])
    no_mx = "t,1764072000,1764071000,a@s1.com,u1@hosted.example,4.0.0,timeout,,,,vmta-1,pool-a,hosted.example/vmta-1,"
    with_mx = no_mx.replace(",timeout,,", ",ok,hosted-example.mail.protection.outlook.com (1.1.1.1),")
    agg.apply(batch_of([with_mx]))
    agg.apply(batch_of([no_mx]))
    assert value(agg, "pmta_deferred_total", vmta="vmta-1", vmta_pool="pool-a", isp="office365",
                 **{"class": "other"}) == 2


def test_receipts_count_as_received_not_as_remote_status():
    """#8 defect 5: r records were counted as pmta_remote_status_total{action="unknown"}."""
    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg), lookup_vmta=lambda cols, rows, resume: [None] * len(rows))
    r = "r,2026-11-25 12:00:00+0000,,a@s1.com,u1@gmail.com,,,,,,vmta-1,pool-a,,"
    rs = "rs,2026-11-25 12:00:00+0000,,a@s1.com,u1@gmail.com,,,,,,vmta-1,pool-a,,"
    agg.apply(batch_of([r, r, r.replace("vmta-1,pool-a", ","), rs]))
    assert value(agg, "pmta_received_total", vmta="vmta-1", vmta_pool="pool-a") == 2
    assert value(agg, "pmta_received_total", vmta="none", vmta_pool="none") == 1
    assert agg.series_counts()["pmta_remote_status_total"] == 1
    assert value(agg, "pmta_remote_status_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail",
                 action="unknown") == 1


def test_last_record_timestamp_never_goes_backwards_nor_into_the_far_future():
    import time

    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg))
    d = "d,{t},{q},a@s1.com,u1@gmail.com,2.0.0,ok,,success,1,vmta-1,pool-a,,"

    def last() -> float | None:
        return reg.get_sample_value("watchtower_last_record_timestamp_seconds", {"source": "acct"})

    agg.apply(batch_of([d.format(t=1764072000, q=1764071000)]))
    assert last() == 1764072000
    agg.apply(batch_of([d.format(t=1764000000, q=1763999000)]))  # an older file read later
    assert last() == 1764072000
    agg.apply(batch_of([d.format(t=4102444800, q=4102444000)]))  # year 2100: a broken clock
    assert last() == 1764072000
    recent = int(time.time()) - 3600
    agg.apply(batch_of([d.format(t=recent, q=recent - 10)]))
    assert last() == recent
    # one broken clock in a chunk does not hide the chunk's believable records
    agg.apply(batch_of([d.format(t=recent + 60, q=recent), d.format(t=4102444800, q=4102444000)]))
    assert last() == recent + 60
    # an hour ahead (the PMTA host's clock is off): read as logged now, never ahead of the clock
    before = time.time()
    agg.apply(batch_of([d.format(t=int(before) + 3600, q=int(before))]))
    assert before - 1 <= last() <= time.time()


def test_last_record_timestamp_follows_the_clock_back_after_it_stepped_back(monkeypatch: pytest.MonkeyPatch):
    """A clock an hour ahead, then corrected: the gauge held the newest time read while ahead (never backwards) and
    stayed an hour ahead of the clock until records passed it: "newest record age" negative, and the stalled-tailer
    alert's "logged ... ago" too (review 2026-12-05). The held value is taken as no later than now."""
    import time

    from exporter import aggregate
    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg))
    d = "d,{t},{q},a@s1.com,u1@gmail.com,2.0.0,ok,,success,1,vmta-1,pool-a,,"
    ahead = time.time() + 3600
    monkeypatch.setattr(aggregate.time, "time", lambda: ahead)  # the host's clock an hour ahead
    agg.apply(batch_of([d.format(t=int(ahead), q=int(ahead) - 10)]))
    assert reg.get_sample_value("watchtower_last_record_timestamp_seconds", {"source": "acct"}) == int(ahead)
    monkeypatch.setattr(aggregate.time, "time", lambda: ahead - 3600)  # NTP steps it back
    agg.apply(batch_of([d.format(t=int(ahead) - 3610, q=int(ahead) - 3620)]))
    assert reg.get_sample_value("watchtower_last_record_timestamp_seconds", {"source": "acct"}) == int(ahead) - 3610


def test_last_record_timestamp_of_a_source_of_complaints_or_remote_bounces_only():
    """An fbl or bounce source (f/rb/rs/r rows only) reports its newest record too: the stalled-tailer alert reads it."""
    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg))
    f = "f,{t},,a@s1.com,u7@yahoo.com,,,,,,vmta-1,pool-a,,abuse"
    rb = "rb,{t},,a@s1.com,u8@gmail.com,5.1.1,smtp;550,,bad-mailbox,,vmta-1,pool-a,,"

    def last(source: str) -> float | None:
        return reg.get_sample_value("watchtower_last_record_timestamp_seconds", {"source": source})

    def batch(source: str, lines: list[str]):
        text = "\n".join([HEADER, *lines]) + "\n"
        return FileParser(source, f"/x/{source}.csv", None).parse(text.encode())[0]

    agg.apply(batch("fbl", [f.format(t=1764072000), f.format(t="2025-11-25 12:05:00+0000"), f.format(t="garbage")]))
    assert last("fbl") == 1764072300
    agg.apply(batch("fbl", [f.format(t=1764000000)]))  # older: never backwards
    assert last("fbl") == 1764072300
    agg.apply(batch("bounce", [rb.format(t=1764072100), rb.format(t=4102444800)]))  # year 2100: not believed
    assert last("bounce") == 1764072100
    assert last("acct") is None


def test_a_row_without_vmta_takes_it_from_its_queue_whatever_its_type():
    """`queue` is domain/vmta ({default}: no VMTA): every record of one queue carries the same `vmta` label, not
    only tq rows (d and t rows without a vmta column value were `none` beside their queue's tq rows)."""
    agg = make()
    d = "d,1764072000,1764071999,a@s1.com,u1@gmail.com,2.0.0,ok,,,1,,,gmail.com/vmta5,"
    t = "t,1764072000,1764071999,a@s1.com,u1@gmail.com,4.4.1,ETIMEDOUT,,,,,,{q},"
    tq = "tq,1764072000,,,,4.4.1,ETIMEDOUT,,,,,,{q},"
    agg.apply(batch_of([d, t.format(q="gmail.com/vmta5"), tq.format(q="gmail.com/vmta5"),
                        t.format(q="gmail.com/{default}"), tq.format(q="gmail.com/{default}")]))
    assert value(agg, "pmta_delivered_total", vmta="vmta5", vmta_pool="none", isp="gmail") == 1
    assert value(agg, "pmta_deferred_total", vmta="vmta5", vmta_pool="none", isp="gmail", **{"class": "other"}) == 2
    assert value(agg, "pmta_deferred_total", vmta="none", vmta_pool="none", isp="gmail", **{"class": "other"}) == 2
    assert agg.series_counts()["pmta_deferred_total"] == 2  # no `{default}` value


def test_an_empty_time_field_is_no_bad_timestamp():
    """PMTA leaves a time field empty where it does not apply (timeQueued of some records): no delay is observed,
    and no parse error is counted (that would page WatchtowerParseErrors); a value it cannot read still is."""
    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg))
    d = "d,{t},{q},a@s1.com,u1@gmail.com,2.0.0,ok,,success,1,vmta-1,pool-a,,"
    agg.apply(batch_of([d.format(t=1000, q=""), d.format(t="", q=900), d.format(t=1000, q=900),
                        d.format(t="garbage", q=900), d.format(t=1000, q="12/06/2024")]))
    assert reg.get_sample_value("watchtower_parse_errors_total", {"source": "acct", "reason": "bad_timestamp"}) == 2
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    assert value(agg, "pmta_delivered_total", **labels) == 5
    assert value(agg, "pmta_delivery_delay_seconds_count", **labels) == 1


def test_negative_delays_are_counted_and_observed_as_zero():
    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg))
    d = "d,{t},{q},a@s1.com,u1@gmail.com,2.0.0,ok,,success,1,vmta-1,pool-a,,"
    t = "t,{t},{q},a@s1.com,u1@gmail.com,4.0.0,later,,,,vmta-1,pool-a,,"
    agg.apply(batch_of([d.format(t=1000, q=1100), d.format(t=1000, q=900), t.format(t=1000, q=1001)]))
    assert reg.get_sample_value("watchtower_negative_delays_total", {"source": "acct"}) == 2
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    assert value(agg, "pmta_delivery_delay_seconds_count", **labels) == 2
    assert value(agg, "pmta_delivery_delay_seconds_sum", **labels) == 100
    assert value(agg, "pmta_delivery_delay_seconds_bucket", le="1.0", **labels) == 1


def test_repaired_records_are_counted_by_the_aggregator():
    from exporter.metrics import SelfMetrics

    reg = CollectorRegistry()
    agg = make(self_metrics=SelfMetrics(reg))
    line = b"b,1000,900,a@s1.com,u@gmx.de,5.1.1,smtp;550 5.1.1 Empf\xe4nger unbekannt,,bad-mailbox,,v,p,,\n"
    batch, _ = FileParser("acct", "/x/a.csv", None).parse(HEADER.encode() + b"\n" + line)
    agg.apply(batch)
    assert reg.get_sample_value("watchtower_records_repaired_total", {"source": "acct", "reason": "invalid_utf8"}) == 1
    assert value(agg, "pmta_bounced_total", vmta="v", vmta_pool="p", isp="other", category="bad-mailbox",
                 **{"class": "user_unknown"}) == 1


def test_reduced_keys_give_the_labels_of_the_raw_rows():
    """dsnMta IPs and per-message reply ids are grouped away before classification, labels unchanged."""
    from exporter.classify import IspClassifier, ReplyClassifier

    isp, replies = IspClassifier.load(), ReplyClassifier.load()
    seen: list[tuple[str, str]] = []

    def isp_of(dom: str, mta: str) -> str:
        seen.append((dom, mta))
        return isp.classify(dom, mta)

    agg = RecordAggregator(isp_of, replies.classify, buckets=[1.0])
    t = ("t,1000,900,a@s1.com,u{n}@gmail.com,4.7.28,\"smtp;421-4.7.28 [10.1.1.1] Our system has detected an unusual "
         "rate of unsolicited mail originating from your IP address. s{n}si{m}lfe.{n} - gsmtp\","
         "gmail-smtp-in.l.google.com (142.250.{n}.{m}),,,vmta-1,pool-a,gmail.com/vmta-1,")
    b = ("b,1000,900,a@s1.com,U{n}.x@Tiny.Example,5.1.1,\"smtp;550 5.1.1 <u{n}.x@tiny.example>: Recipient address "
         "rejected: User unknown\",mx.tiny.example (203.0.{n}.{m}),bad-mailbox,,vmta-1,pool-a,tiny.example/vmta-1,")
    agg.apply(batch_of([x.format(n=n, m=n * 7) for n in range(1, 60) for x in (t, b)]))
    assert sorted(seen) == [("gmail.com", "gmail-smtp-in.l.google.com"), ("tiny.example", "mx.tiny.example")]
    assert value(agg, "pmta_deferred_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail",
                 **{"class": "throttled"}) == 59
    assert value(agg, "pmta_bounced_total", vmta="vmta-1", vmta_pool="pool-a", isp="other",
                 category="bad-mailbox", **{"class": "user_unknown"}) == 59
    assert len(agg._class_cache) == 2


def test_polars_reply_key_matches_the_classifiers_own_normalisation():
    import polars as pl

    from exporter.aggregate import reply_key
    from exporter.classify.replies import normalize_reply

    texts = ["smtp;452-4.2.2 over quota. s142si14934335lfe.256 - gsmtp", "x.1 - gsmtp", " - gsmtp",
             "a b.12 c.34 - gsmtp", "550 <john.doe@x.com>: unknown, also jane@y", "a\x1cb@c", "tab\tx@y",
             "4.16.55.1 - gsmtp", "sp ace.9 - gsmtp\n", "über@x.de ok", "", "a@b@c", "\u2003w@z"]
    got = pl.DataFrame({"d": texts}).select(reply_key(pl.col("d"))).to_series().to_list()
    assert got == [normalize_reply(t) for t in texts]


def test_files_without_times_count_deliveries_without_histograms():
    batch, _ = FileParser("acct", "/x/a.csv", None).parse(
        b"type,rcpt,vmta,vmtaPool,dlvSize\nd,u1@gmail.com,vmta-1,pool-a,100\nd,u2@gmail.com,vmta-1,pool-a,x\n")
    agg = make()
    agg.apply(batch)
    assert value(agg, "pmta_delivered_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail") == 2
    assert value(agg, "pmta_delivered_bytes_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail") == 100
    assert agg.series_counts()["pmta_delivery_delay_seconds"] == 0


def test_times_that_are_no_time_give_no_delay_and_the_record_still_counts():
    """nan, inf, 1e308 and negative epochs parse as floats but are no PMTA time (found feeding hostile files to the
    correlator: `nan` as timeQueued killed its process in a loop). The record counts; its delay is not observed."""
    from exporter.timeparse import parse_pmta_time

    odd = ["nan", "NaN", "inf", "-inf", "1e308", "-5", "253402300800"]
    assert [parse_pmta_time(v) for v in odd] == [None] * len(odd)
    assert parse_pmta_time("0") == 0.0 and parse_pmta_time("1764072000.5") == 1764072000.5
    agg = make()
    d = "d,1764072000,{q},a@s1.com,u1@gmail.com,2.0.0,ok,,success,1,vmta-1,pool-a,,"
    agg.apply(batch_of([d.format(q=q) for q in [*odd, "1764071990"]]))
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    assert value(agg, "pmta_delivered_total", vmta="vmta-1", vmta_pool="pool-a", isp="gmail") == len(odd) + 1
    assert value(agg, "pmta_delivery_delay_seconds_count", **labels) == 1
    assert value(agg, "pmta_delivery_delay_seconds_sum", **labels) == 10


def test_a_report_naming_no_provider_takes_the_isp_of_its_matched_delivery():
    """An FBL whose recipient Hotmail/JMRP anonymised (no rcpt domain, no dsnMta nor reportingMta) was counted
    `isp="other"` though the lookup matched its delivery: it takes the delivery's provider (f, rb, rs alike, and
    a report with a vmta of its own too, or one whose dsnMta resolves to `other`); a report that names its provider
    keeps its own; no match (or a lookup giving no provider) keeps `other`."""
    from exporter.sinks import Delivery

    asked: list[str] = []

    def lookup(cols, rows, resume):  # type: ignore[no-untyped-def]
        asked.extend(r[cols.orig] for r in rows)
        return [None if r[cols.orig].startswith("none") else ("vmta-7", "pool-z") if r[cols.orig].startswith("old")
                else Delivery("vmta-7", "pool-z", "microsoft") for r in rows]

    agg = make(lookup_vmta=lookup)
    agg.apply(batch_of([
        "f,2026-11-25 12:00:00+0000,,a@s1.com,,,,,,,,,,abuse",  # anonymised: the delivery's provider
        "f,2026-11-25 12:00:00+0000,,b@s1.com,u1@yahoo.com,,,,,,,,,abuse",  # its own recipient decides
        "f,2026-11-25 12:00:00+0000,,none@s1.com,,,,,,,,,,abuse",  # matched nothing: as before
        "f,2026-11-25 12:00:00+0000,,old@s1.com,,,,,,,,,,abuse",  # a lookup that gives no provider: as before
        "f,2026-11-25 12:00:00+0000,,c@s1.com,,,,,,,vmta-1,pool-a,,abuse",  # own vmta kept, provider looked up
        "rb,2026-11-25 12:00:00+0000,,d@s1.com,,5.1.1,smtp;550 unknown,,bad-mailbox,,,,,",
        "rs,2026-11-25 12:00:00+0000,,e@s1.com,,,,,,,,,,",
        "rb,2026-11-25 12:00:00+0000,,f@s1.com,,5.1.1,smtp;550 unknown,mx.yahoo.com (1.1.1.1),bad-mailbox,,,,,",
    ]))
    assert value(agg, "pmta_complaints_total", vmta="vmta-7", vmta_pool="pool-z", isp="microsoft",
                 feedback_type="abuse") == 1
    assert value(agg, "pmta_complaints_total", vmta="vmta-7", vmta_pool="pool-z", isp="yahoo",
                 feedback_type="abuse") == 1
    assert value(agg, "pmta_complaints_total", vmta="unknown", vmta_pool="unknown", isp="other",
                 feedback_type="abuse") == 1
    assert value(agg, "pmta_complaints_total", vmta="vmta-7", vmta_pool="pool-z", isp="other",
                 feedback_type="abuse") == 1
    assert value(agg, "pmta_complaints_total", vmta="vmta-1", vmta_pool="pool-a", isp="microsoft",
                 feedback_type="abuse") == 1
    assert value(agg, "pmta_sender_complaints_total", sender="s1.com", isp="microsoft", feedback_type="abuse") == 2
    assert agg.series_counts()["pmta_remote_bounced_total"] == 1
    assert value(agg, "pmta_remote_status_total", vmta="vmta-7", vmta_pool="pool-z", isp="microsoft",
                 action="unknown") == 1
    rb = agg.counters["pmta_remote_bounced_total"]
    assert {k[:4]: n for k, n in rb.items()} == {("vmta-7", "pool-z", "microsoft", "bad-mailbox"): 2}  # a dsnMta
    # resolving to `other` (mx.yahoo.com is no MX this isp_of knows) does not outweigh the matched delivery
    assert asked == ["a@s1.com", "b@s1.com", "none@s1.com", "old@s1.com", "c@s1.com", "d@s1.com", "e@s1.com",
                     "f@s1.com"]


def test_without_a_correlator_an_anonymised_report_stays_other():
    agg = make()
    agg.apply(batch_of(["f,2026-11-25 12:00:00+0000,,a@s1.com,,,,,,,,,,abuse"]))
    assert value(agg, "pmta_complaints_total", vmta="unknown", vmta_pool="unknown", isp="other",
                 feedback_type="abuse") == 1


FBL_HEADER = "type,timeLogged,orig,rcpt,repSourceIp,feedbackType,format,userAgent,reportingMta,reportedDomain,dsnMta"


def fbl_batch(lines: list[str]):
    batch, _ = FileParser("fbl", "/x/fbl.csv", None).parse(("\n".join([FBL_HEADER, *lines]) + "\n").encode())
    return batch


def real_isp():
    from exporter.classify.isp import IspClassifier

    return IspClassifier.load()


def test_a_complaint_whose_recipient_hotmail_hid_is_microsoft_by_its_reporting_mta():
    """pmta-formats.md §1.2/§3.3: Hotmail hides the recipient; the report's reportingMta is `dns; hotmail.com`.
    Resolved in the domain table (after its `dns;` type), not as an MX: `microsoft`, without any correlator."""
    isp = real_isp()
    agg = RecordAggregator(isp.classify, class_of, buckets=[1.0])
    agg.apply(fbl_batch([
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,Microsoft JMRP,dns; hotmail.com,s1,",
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,Yahoo,dns; mta.yahoo.com,s1,",
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,u@gmail.com,198.51.100.10,abuse,arf,x,dns; hotmail.com,s1,",
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,x,dns; fbl.example,s1,",
    ]))
    assert agg.counters["pmta_complaints_total"] == {("unknown", "unknown", "microsoft", "abuse"): 1,
                                                     ("unknown", "unknown", "yahoo", "abuse"): 1,
                                                     ("unknown", "unknown", "gmail", "abuse"): 1,  # its recipient
                                                     ("unknown", "unknown", "other", "abuse"): 1}
    assert isp._learned == {}  # a reporter teaches the MX table nothing


def test_a_matched_deliverys_isp_wins_over_a_reporting_mta_that_resolves_to_other():
    """The reviewer's repro (/tmp/review-sim/fbl.py): two hidden-recipient JMRP complaints whose deliveries were found,
    one naming `dns; hotmail.com`, one no reporting MTA: both `microsoft` (the first was `other`)."""
    from exporter.sinks import Delivery

    isp = real_isp()
    agg = RecordAggregator(isp.classify, class_of, buckets=[1.0],
                           lookup_vmta=lambda c, rows, resume: [Delivery("vmta-01", "pool-a", "microsoft")
                                                                for _ in rows])
    agg.apply(fbl_batch([
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,Microsoft JMRP,dns; hotmail.com,s1,",
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,Microsoft JMRP,,s1,",
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,x,dns; fbl.example,s1,",
        "f,2024-06-12 12:00:00+0000,bounces@s1.example,,198.51.100.10,abuse,arf,x,dns; mta.yahoo.com,s1,",
    ]))
    assert agg.counters["pmta_complaints_total"] == {("vmta-01", "pool-a", "microsoft", "abuse"): 3,
                                                     ("vmta-01", "pool-a", "yahoo", "abuse"): 1}  # its own wins


def test_a_remote_report_takes_the_mx_its_domain_was_delivered_to_and_leaves_it_learned():
    """An rb/rs dsnMta is the recipient's internal server, not the MX: the provider an earlier delivery's MX taught
    for the domain decides, and stays learned (a later record without dsnMta, such as a tq on connect, still gets
    it); before, the report was `other` and made the classifier forget the domain's MX."""
    isp = real_isp()
    assert isp.classify("contoso.example", "contoso-example.mail.protection.outlook.com (52.101.1.1)") == "office365"
    agg = RecordAggregator(isp.classify, class_of, buckets=[1.0])
    agg.apply(fbl_batch(["rb,2024-06-12 12:00:00+0000,bounces@s1.example,u@contoso.example,,,,,,,"
                         "mail.contoso.example (10.1.0.25)"]))
    assert {k[2] for k in agg.counters["pmta_remote_bounced_total"]} == {"office365"}
    assert isp.classify("contoso.example") == "office365"


@pytest.mark.parametrize("groups", [3, 5000])
def test_the_vmtas_deferred_since_the_last_take_are_those_of_t_and_tq_records_only(groups: int) -> None:
    """The queue poller asks for these VMTAs by name (PMTA's own lists are top N): every VMTA a t or tq record
    named, in a small chunk (a poll's, folded by a loop) and a large one (folded by polars plans), and not one
    only a delivery, a bounce or an over-the-cap value named; each call takes them once."""
    agg = RecordAggregator(lambda d, h: "gmail", lambda *a: "other", buckets=[1.0], max_vmtas=50)
    head = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSize,vmta,vmtaPool,queue,x\n"
    rows = [f"t,1764072000,1764071999,a@s.com,u@d{i}.example,4.0.0,smtp;421 try later,,,1,vmta-{i % 40:02d},p,,\n"
            for i in range(groups)]
    rows += ["tq,1764072000,,,,4.4.0,smtp;dns down,,,,vmta-tq,p,,\n",
             "d,1764072000,1764071999,a@s.com,u@gmail.com,2.0.0,smtp;250 ok,,,1,vmta-d,p,,\n",
             "b,1764072000,1764071999,a@s.com,u@gmail.com,5.1.1,smtp;550 no,,bad-mailbox,1,vmta-b,p,,\n"]
    rows += [f"t,1764072000,1764071999,a@s.com,u@gmail.com,4.0.0,smtp;421 x,,,1,vmta-over{i},p,,\n" for i in range(60)]
    agg.apply(FileParser("diag", "/x/d.csv", None).parse((head + "".join(rows)).encode())[0])
    want = {f"vmta-{i % 40:02d}" for i in range(groups)} | {"vmta-tq"}
    want |= {f"vmta-over{i}" for i in range(50 - len(want) - 2)}  # d and b took two of the cap's places first
    assert agg.take_deferring_vmtas() == want
    assert agg.take_deferring_vmtas() == set()

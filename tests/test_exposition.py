"""exporter.exposition: byte-identical to prometheus_client's encoders, cache follows changes, gzip honoured."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.aggregate import RecordAggregator
from exporter.exposition import render_sync, wants_gzip, wants_openmetrics
from exporter.metrics import SelfMetrics
from exporter.parser import FileParser

HEADER = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSize,vmta,vmtaPool,queue"
ROWS = [
    "d,1000,990,a@s1.com,u1@gmail.com,2.0.0,ok,,success,10,vmta-1,pool-a,",
    'd,1000,400,a@s2.com,u2@yahoo.com,2.0.0,ok,,success,2000000,"vm ""quoted"" \\\\ x",pool-b,',
    "t,1000,100,a@s1.com,u3@gmail.com,4.7.28,rate 4.7.28,,,,vmta-1,pool-a,",
    "b,1000,100,a@s1.com,u4@gmail.com,5.1.1,unknown,,bad-mailbox,,vmta-2,pool-a,",
]


def registry_with(rows: list[str]) -> tuple[CollectorRegistry, RecordAggregator, FileParser]:
    reg = CollectorRegistry()
    metrics = SelfMetrics(reg)
    metrics.init_source("acct")
    agg = RecordAggregator(lambda d, m: d.split(".")[0] or "other", lambda *a: "other", buckets=[1.0, 60.0, 1e7],
                           self_metrics=metrics)
    reg.register(agg)
    parser = FileParser("acct", "/x/a.csv", None)
    batch, _ = parser.parse(("\n".join([HEADER, *rows]) + "\n").encode())
    agg.apply(batch)
    return reg, agg, parser


def test_output_is_what_prometheus_client_writes_in_both_formats():
    reg, agg, parser = registry_with(ROWS)
    assert render_sync(reg) == generate_latest(reg)
    assert render_sync(reg, openmetrics=True) == generate_openmetrics(reg)
    # after more traffic the cached lines of changed series are re-rendered, unchanged ones reused
    batch, _ = parser.parse((ROWS[0] + "\n" + ROWS[2].replace("vmta-1", "vmta-9") + "\n").encode())
    agg.apply(batch)
    assert render_sync(reg) == generate_latest(reg)
    assert b'pmta_delivered_total{isp="gmail",vmta="vmta-1",vmta_pool="pool-a"} 2.0' in render_sync(reg)


def test_content_negotiation():
    prometheus = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                  "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert not wants_openmetrics(prometheus) and not wants_openmetrics("") and not wants_openmetrics("text/plain")
    assert wants_openmetrics("application/openmetrics-text; version=1.0.0")
    assert wants_gzip("gzip") and wants_gzip("br, gzip;q=0.5") and wants_gzip("*")
    assert not wants_gzip("") and not wants_gzip("identity") and not wants_gzip("gzip;q=0")


async def test_http_metrics_gzip_and_plain_carry_the_same_page():
    from exporter.http import build_app

    reg, _agg, _p = registry_with(ROWS)
    Counter("watchtower_probe", "probe", registry=reg).inc(3)
    app = build_app(reg, lambda: {"ok": True})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        gz = await c.get("/metrics", headers={"accept-encoding": "gzip"})
        plain = await c.get("/metrics", headers={"accept-encoding": "identity"})
        om = await c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0",
                                              "accept-encoding": "identity"})
    assert gz.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert gz.content == plain.content  # httpx decodes the gzip body
    assert plain.content == generate_latest(reg)
    # the format rendered, whichever prometheus-client is installed (0.22+ labels its own default 1.0.0)
    assert plain.headers["content-type"] == gz.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert om.content == generate_openmetrics(reg)
    assert om.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"



def only(page: bytes, names: list[str]) -> bytes:
    """The page's sample lines named in `names`, each family's kept under its HELP/TYPE lines (and `# EOF`)."""
    out: list[bytes] = []
    header: list[bytes] = []
    for line in page.splitlines(keepends=True):
        if line == b"# EOF\n":
            out.append(line)
        elif line.startswith(b"#"):
            header = [line] if line.startswith(b"# HELP") else [*header, line]
        elif line.split(b"{")[0].split(b" ")[0].decode() in names:
            out += header + [line]
            header = []
    return b"".join(out)


async def test_name_parameters_select_samples_as_prometheus_client_does() -> None:
    """`/metrics?name[]=...` answers the full page's lines of those samples, each family under its HELP and TYPE
    (what prometheus_client's restricted_registry writes): whole families, some samples of a histogram, self
    metrics, names that match nothing; past MAX_NAMES a 400."""
    from exporter.exposition import MAX_NAMES
    from exporter.http import build_app

    reg, _agg, _p = registry_with(ROWS)
    Counter("watchtower_probe", "probe", registry=reg).inc(3)
    app = build_app(reg, lambda: {"ok": True})
    asks = [
        ["pmta_delivered_total", "pmta_bounced_total"],
        ["pmta_delivery_delay_seconds_count", "pmta_delivery_delay_seconds_sum"],
        ["pmta_delivery_delay_seconds_bucket", "pmta_delivery_delay_seconds_count", "pmta_delivery_delay_seconds_sum"],
        ["watchtower_probe_total", "watchtower_metric_series", "pmta_deferred_total"],
        ["no_such_metric", "pmta_complaints_total"],  # a family without series: no HELP/TYPE either
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        for names in asks:
            got = await c.get("/metrics", params={"name[]": names}, headers={"accept-encoding": "identity"})
            assert got.status_code == 200
            assert got.content == only(generate_latest(reg), names), names
            assert all(name.encode() in got.content for name in names if name not in asks[-1])
        om = await c.get("/metrics", params={"name[]": asks[1]},
                         headers={"accept": "application/openmetrics-text; version=1.0.0"})
        too_many = await c.get("/metrics", params={"name[]": [f"m{i}" for i in range(MAX_NAMES + 1)]})
    assert om.content == only(generate_openmetrics(reg), asks[1])
    assert b"pmta_delivery_delay_seconds_count{" in om.content and b"_bucket" not in om.content
    assert too_many.status_code == 400
    assert too_many.json() == {"error": f"at most {MAX_NAMES} name[] parameters, got {MAX_NAMES + 1}",
                               "parameter": "name[]", "status": 400}

def test_a_oneshot_page_is_what_prometheus_client_writes(tmp_path, monkeypatch) -> None:
    """Thousands of series of every family (histograms with every label, escapes, large values)."""
    import yaml

    from bench.corpus import make_corpus
    from exporter import oneshot
    from exporter.config import load_config

    make_corpus(tmp_path, 4000, files=2)
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]},
                    {"name": "diag", "paths": [str(tmp_path / "diag-*.csv")]}],
        "state_dir": str(tmp_path), "correlator": {"enabled": False}}))
    captured = {}

    def capture(registry: CollectorRegistry, openmetrics: bool = False) -> bytes:
        captured["registry"] = registry
        return render_sync(registry, openmetrics)

    monkeypatch.setattr("exporter.exposition.render_sync", capture)
    page = oneshot.run_oneshot(load_config(tmp_path / "c.yml"))
    assert page.count("pmta_delivery_delay_seconds_bucket") > 100
    assert page.encode() == generate_latest(captured["registry"])


@pytest.mark.parametrize(("accept", "openmetrics"), [
    ("application/openmetrics-text, text/plain;q=0", True),  # text refused: q=0 is "not acceptable"
    ("text/plain;q=0, */*;q=0.1, application/openmetrics-text", True),  # the most specific range decides text's q
    ("text/*;q=0, application/openmetrics-text;version=1.0.0", True),
    ("APPLICATION/OpenMetrics-Text; Version=1.0.0", True),
    ("application/openmetrics-text; version=0.0.1", False),  # a version this page is not: text, as client_python
    ("application/openmetrics-text;q=0", False),
    ("application/openmetrics-textfoo", False),  # another type, not a prefix match
    ("application/json", False),  # nothing this page has is asked for: text, the default
])
def test_content_negotiation_reads_media_ranges_and_their_weights(accept: str, openmetrics: bool) -> None:
    """Substring tests served text to a client that refused it (`text/plain;q=0`), OpenMetrics 1.0.0 to one that asked
    for version 0.0.1 only, and OpenMetrics for `application/openmetrics-textfoo`."""
    assert wants_openmetrics(accept) is openmetrics


async def test_blank_and_repeated_names_are_read_as_prometheus_client_reads_them() -> None:
    """`?name[]=` (blank) answered an empty page and 65 copies of one name a 400; prometheus_client's parse_qs drops
    blank values (the whole page) and the limit is on the names asked, not on repeats."""
    from exporter.exposition import MAX_NAMES
    from exporter.http import build_app

    reg, _agg, _p = registry_with(ROWS)
    app = build_app(reg, lambda: {"ok": True})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        blank = await c.get("/metrics?name[]=", headers={"accept-encoding": "identity"})
        blanks = await c.get("/metrics?name[]=&name[]=pmta_delivered_total", headers={"accept-encoding": "identity"})
        repeated = await c.get("/metrics", params={"name[]": ["pmta_delivered_total"] * (MAX_NAMES + 1)},
                               headers={"accept-encoding": "identity"})
    assert (blank.status_code, blank.content) == (200, generate_latest(reg))
    assert blanks.content == repeated.content == only(generate_latest(reg), ["pmta_delivered_total"])
    assert repeated.status_code == 200


@pytest.mark.parametrize("encoding", ["identity", "gzip", ""])
async def test_metrics_says_once_that_it_varies_with_accept_and_accept_encoding(encoding: str) -> None:
    """`vary: accept-encoding, Accept-Encoding` (the route's and Starlette's gzip both added it), and never Accept,
    which chooses the format."""
    from exporter.http import build_app

    reg, _agg, _p = registry_with(ROWS)
    app = build_app(reg, lambda: {"ok": True})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        r = await c.get("/metrics", headers={"accept-encoding": encoding} if encoding else {})
    assert r.headers.get_list("vary") == ["Accept, Accept-Encoding"]


@pytest.mark.parametrize("openmetrics", [False, True])
def test_renamed_self_metrics_serve_their_old_names_with_the_same_values(openmetrics: bool) -> None:
    """The three names without their unit last are served under the new name and, for a deprecation period, the
    old one (HELP `Deprecated: use NEW.`), from the same values: set, incremented and zero-initialised per source."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    renamed = {"watchtower_read_bytes_total": "watchtower_bytes_read_total",
               "watchtower_behind_bytes": "watchtower_bytes_behind",
               "watchtower_commit_backlog_lost_bytes_total": "watchtower_commit_backlog_bytes_lost_total"}
    reg = CollectorRegistry()
    metrics = SelfMetrics(reg)
    for source in ("acct", "diag"):
        metrics.init_source(source)
    metrics.bytes_read.labels("acct").inc(1234)
    metrics.bytes_behind.labels("acct").set(56)
    metrics.commit_backlog_bytes_lost.inc(7)
    page = render_sync(reg, openmetrics)
    assert page == (generate_openmetrics if openmetrics else generate_latest)(reg)
    samples: dict[str, dict[tuple, float]] = {}
    helps: dict[str, str] = {}
    for fam in (parse_om if openmetrics else parse_text)(page.decode()):
        for s in fam.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
            helps[s.name] = fam.documentation
    assert samples["watchtower_read_bytes_total"] == {(("source", "acct"),): 1234.0, (("source", "diag"),): 0.0}
    assert samples["watchtower_behind_bytes"] == {(("source", "acct"),): 56.0, (("source", "diag"),): 0.0}
    assert samples["watchtower_commit_backlog_lost_bytes_total"] == {(): 7.0}
    for new, old in renamed.items():
        assert samples[old] == samples[new], old
        assert helps[old] == f"Deprecated: use {new}. {helps[new]}"
        assert reg.get_sample_value(old, {"source": "acct"} if "backlog" not in old else {}) == \
            reg.get_sample_value(new, {"source": "acct"} if "backlog" not in new else {})
        # `/metrics?name[]=OLD` selects the alias alone
        assert b"Deprecated" in render_sync(reg, openmetrics, frozenset({old}))
        assert new.encode() not in render_sync(reg, openmetrics, frozenset({old})).replace(
            f"Deprecated: use {new}".encode(), b"")
    with pytest.raises(ValueError, match="Duplicated"):  # the old names are the registry's too: no second owner
        Counter("watchtower_bytes_read", "x", ["source"], registry=reg)

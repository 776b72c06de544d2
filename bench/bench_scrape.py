"""/metrics latency at the 47k-series reference deployment (bench/cardinality.py builds it).

Scrapes go through the real listener app (exporter.http.build_app, in-process over ASGI) in two
scenarios: a batch of 500 new records applied between scrapes (few series change: the renderer's
line cache serves most of the page), and every series changed since the last scrape (what a
15 s scrape interval at 20k records/s approaches: the line cache is dropped before each scrape,
so every line is formatted again). Reports p50/p99 for text, text + gzip, what Prometheus itself
asks for (its Accept and Accept-Encoding headers) and OpenMetrics, and the old path
(prometheus_client's generate_latest on the loop) measured in the same run.
Run: `.venv/bin/python bench/bench_scrape.py [--scrapes 100]`. Target: p99 <= 100 ms in both.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.exposition import generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cardinality import reference_pipeline  # noqa: E402
from exporter import gcpolicy  # noqa: E402
from exporter.exposition import renderer_for  # noqa: E402
from exporter.http import build_app  # noqa: E402
from exporter.parser import FileParser  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] * 1000


PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
"""What Prometheus 2.x sends by default (scrape_protocols): it is given the text format here."""
SCENARIOS = ("500 records between scrapes", "every series changed")


async def main_async(scrapes: int) -> None:
    gcpolicy.settle()  # the daemon's collector policy, applied where it applies it: after start-up, before any record
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pipeline, _records = await reference_pipeline(directory)
        registry = pipeline.registry
        lines = (directory / "acct-2026-11-25-0000.csv").read_text().splitlines()
        header, body = lines[0], lines[1:]
    parser = FileParser("acct", "/x", None)
    parser.parse((header + "\n").encode())
    app = build_app(registry, lambda: {"ok": True})
    series = sum(1 for line in generate_latest(registry).splitlines() if not line.startswith(b"#"))
    results: dict[tuple[str, str], list[float]] = {}
    sizes: dict[str, int] = {}
    kinds = {"text": {"accept-encoding": "identity"}, "text+gzip": {"accept-encoding": "gzip"},
             "openmetrics": {"accept": "application/openmetrics-text; version=1.0.0", "accept-encoding": "identity"}}
    kinds = {"text": {"accept-encoding": "identity"}, "text+gzip": {"accept-encoding": "gzip"},
             "prometheus (its headers)": {"accept": PROMETHEUS_ACCEPT, "accept-encoding": "gzip"},
             "openmetrics": {"accept": "application/openmetrics-text; version=1.0.0", "accept-encoding": "identity"}}
    families = renderer_for(registry)._families
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        t0 = time.perf_counter()
        await c.get("/metrics")
        cold = time.perf_counter() - t0
        for scenario in SCENARIOS:
            for i in range(scrapes):
                batch, _ = parser.parse(("\n".join(body[(i * 500) % len(body):][:500]) + "\n").encode())
                if batch is not None:
                    pipeline.on_batch(None, batch)  # type: ignore[arg-type]
                for name, headers in kinds.items():
                    if scenario == SCENARIOS[1]:
                        for fam in families.values():  # every value new: each line formatted again
                            fam.lines = {}
                    t0 = time.perf_counter()
                    async with c.stream("GET", "/metrics", headers=headers) as r:
                        size = sum([len(chunk) async for chunk in r.aiter_raw()])  # as sent: not gunzipped here
                    results.setdefault((scenario, name), []).append(time.perf_counter() - t0)
                    sizes[name] = size
                t0 = time.perf_counter()
                generate_latest(registry)  # no cache: the same work in either scenario
                results.setdefault((scenario, "old: generate_latest"), []).append(time.perf_counter() - t0)
                sizes["old: generate_latest"] = sizes["text"]
    print(f"{series:,} series; {scrapes} scrapes each per scenario; first (cold cache) scrape: {cold * 1000:.0f} ms")
    print(f"{'scenario':<28} {'path':<26} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>10}")
    for (scenario, name), xs in results.items():
        print(f"{scenario:<28} {name:<26} {pct(xs, 50):8.1f} {pct(xs, 99):8.1f} {sizes[name]:10,d}"
              f"  (mean {statistics.mean(xs) * 1000:.1f}, n={len(xs)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=100)
    asyncio.run(main_async(ap.parse_args().scrapes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

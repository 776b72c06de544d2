"""/metrics latency at the 47k-series reference deployment (bench/cardinality.py builds it).

Scrapes go through the real listener app (exporter.http.build_app, in-process over ASGI) while a
small batch of new records is applied between scrapes, as under live traffic (so some series
change each time). Reports p50/p99 for text, text + gzip and OpenMetrics, and the old path
(prometheus_client's generate_latest on the loop) measured in the same run.
Run: `.venv/bin/python bench/bench_scrape.py [--scrapes 50]`. Target: p99 <= 100 ms.
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
from exporter.http import build_app  # noqa: E402
from exporter.parser import FileParser  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] * 1000


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
    results: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    kinds = {"text": {"accept-encoding": "identity"}, "text+gzip": {"accept-encoding": "gzip"},
             "openmetrics": {"accept": "application/openmetrics-text; version=1.0.0", "accept-encoding": "identity"}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        t0 = time.perf_counter()
        await c.get("/metrics")
        cold = time.perf_counter() - t0
        for i in range(scrapes):
            batch, _ = parser.parse(("\n".join(body[(i * 500) % len(body):][:500]) + "\n").encode())
            if batch is not None:
                pipeline.on_batch(None, batch)  # type: ignore[arg-type]
            for name, headers in kinds.items():
                t0 = time.perf_counter()
                r = await c.get("/metrics", headers=headers)
                results.setdefault(name, []).append(time.perf_counter() - t0)
                sizes[name] = int(r.headers.get("content-length", len(r.content)))
            t0 = time.perf_counter()
            generate_latest(registry)
            results.setdefault("old: generate_latest", []).append(time.perf_counter() - t0)
            sizes["old: generate_latest"] = sizes["text"]
    print(f"{series:,} series; {scrapes} scrapes each, a 500-record batch applied between scrapes;"
          f" first (cold cache) scrape: {cold * 1000:.0f} ms")
    print(f"{'path':<24} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>10}")
    for name, xs in results.items():
        print(f"{name:<24} {pct(xs, 50):8.1f} {pct(xs, 99):8.1f} {sizes[name]:10,d}"
              f"  (mean {statistics.mean(xs) * 1000:.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=50)
    asyncio.run(main_async(ap.parse_args().scrapes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

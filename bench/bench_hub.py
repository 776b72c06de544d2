"""Hub fan-out latency: GET /api/v1/messages/{id} through `watchtower hub` over three daemons.

    .venv/bin/python bench/bench_hub.py                 # 400 lookups, sequential and 8 at a time
    .venv/bin/python bench/bench_hub.py --requests 1000

Starts the same three simulated hosts as tests/hub (three `watchtower run` processes with their
correlators, different VMTAs, overlapping recipients) and a hub on loopback, then asks for
Message-Ids spread over the three hosts. The baseline is the same lookup asked of the owning
daemon directly, in the same run: the difference is what the fan-out costs (three requests,
merge, one more hop). Loopback only, so network latency between hosts is not included: add your
RTT to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hub.cluster import start_cluster  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def measure(urls: list[str], concurrency: int) -> list[float]:
    lat: list[float] = []
    queue = list(urls)
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker() -> None:
            while queue:
                url = queue.pop()
                t = time.perf_counter()
                r = await client.get(url)
                lat.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat


def line(name: str, lat: list[float]) -> str:
    ms = [x * 1000 for x in lat]
    return (f"{name:<34} n={len(ms):<5} p50={pct(ms, 50):6.2f} ms  p99={pct(ms, 99):6.2f} ms  "
            f"mean={statistics.fmean(ms):6.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--timeout", type=float, default=2.0, help="hub per-host timeout")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), timeout=args.timeout)
        try:
            rng = random.Random(1)
            picks = [(h, rng.choice(h.message_ids)) for h in rng.choices(cluster.hosts, k=args.requests)]
            hub_urls = [f"{cluster.hub.url}/api/v1/messages/{mid}" for _h, mid in picks]
            direct_urls = [f"{h.wt.url}/api/v1/messages/{mid}" for h, mid in picks if h.wt]
            asyncio.run(measure(hub_urls[:50], 1))  # warm up both paths
            asyncio.run(measure(direct_urls[:50], 1))
            print("hub over 3 daemons on loopback, messages/{id}, Message-Ids spread over the hosts")
            for conc in (1, 8):
                print(line(f"direct to the owning daemon (c={conc})", asyncio.run(measure(direct_urls, conc))))
                print(line(f"through the hub (c={conc})", asyncio.run(measure(hub_urls, conc))))
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

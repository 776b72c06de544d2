"""/metrics latency while 50 unauthenticated clients hammer /api/v1 (issue 9, defect 5).

    .venv/bin/python bench/bench_api_load.py                      # 100k timelines, 50 clients, 20 s
    .venv/bin/python bench/bench_api_load.py --records 20000 --duration 10

A real `watchtower run` (correlator on) ingests a synthetic acct file (d records over 40 VMTAs,
12 domains, 200 jobs), then:
  1. baseline: /metrics scraped back to back for --duration/2 s, nothing else running;
  2. load: --clients API clients (a separate process, so the load generator does not share the
     scraper's interpreter) loop over the slow queries an attacker would pick: search by vmta
     (a scan), by outcome, by time range, flows over the whole range, deep cursors; meanwhile
     /metrics is scraped back to back again.
Prints p50/p90/p99/max of /metrics in both phases and the API answer counts by status (503 =
refused by the concurrency limit or the query budget, which is the point). No assertion: the
figures go in the report; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
HEADER = ("type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,dlvSourceIp,vmta,jobId,"
          "vmtaPool,header_Message-Id")
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "aol.com", "icloud.com", "comcast.net",
           "gmx.de", "web.de", "orange.fr", "free.fr", "example.org"]
T0 = 1_714_550_400


def write_corpus(path: Path, records: int) -> None:
    rnd = random.Random(9)
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADER + "\n")
        for i in range(records):
            t = T0 + i // 10
            kind = "d" if rnd.random() < 0.9 else "b"
            status = "2.0.0 (success)" if kind == "d" else "5.1.1 (bad destination mailbox address)"
            f.write(f"{kind},{t},{t - 30},news@shop.example,u{i}@{rnd.choice(DOMAINS)},relayed,{status},"
                    f"smtp;250 ok {i},mx.example (192.0.2.1),success,10.0.0.{i % 40},vmta-{i % 40:02d},"
                    f"job{i % 200},pool-{i % 4},<m{i}@shop.example>\n")


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return (f"n={len(samples)} p50={qs[49] * 1000:.1f}ms p90={qs[89] * 1000:.1f}ms p99={qs[98] * 1000:.1f}ms "
            f"max={max(samples) * 1000:.1f}ms")


def scrape_for(url: str, seconds: float) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            r = c.get(url + "/metrics", headers={"accept-encoding": "gzip"})
            out.append(time.perf_counter() - t)
            assert r.status_code == 200, r.status_code
    return out


def api_queries(rnd: random.Random) -> tuple[str, dict[str, str]]:
    choice = rnd.randrange(6)
    if choice == 0:
        return "/api/v1/search", {"vmta": f"vmta-{rnd.randrange(40):02d}", "limit": "500"}
    if choice == 1:
        return "/api/v1/search", {"outcome": "bounced", "limit": "500"}
    if choice == 2:
        return "/api/v1/search", {"since": str(T0 + rnd.randrange(10_000)), "vmta": "vmta-99", "limit": "500"}
    if choice == 3:
        return "/api/v1/flows", {"since": str(T0), "until": str(T0 + 86400 * 3)}
    if choice == 4:
        return "/api/v1/search", {"rcpt": f"u{rnd.randrange(10**6)}@gmail.com"}
    return "/api/v1/search", {"vmta": "nope", "outcome": "pending", "limit": "500"}


async def _clients(url: str, clients: int, seconds: float, counts: dict[str, int]) -> None:
    rnd = random.Random(os.getpid())
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        async def one() -> None:
            while time.monotonic() < end:
                path, params = api_queries(rnd)
                try:
                    r = await c.get(path, params=params)
                    counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1

        await asyncio.gather(*(one() for _ in range(clients)))


def load_process(url: str, clients: int, seconds: float, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    counts: dict[str, int] = {}
    asyncio.run(_clients(url, clients, seconds, counts))
    queue.put(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of the load phase")
    ap.add_argument("--api-concurrency", type=int, default=None, help="web.api_max_concurrency (default: the "
                    "config default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        d = Path(tmp)
        (d / "logs").mkdir()
        write_corpus(d / "logs" / "acct-2024-05-01-0000.csv", args.records)
        port = 20000 + os.getpid() % 20000
        cfg = {"sources": [{"name": "acct", "paths": [str(d / "logs" / "acct-*.csv")]}], "state_dir": str(d / "state"),
               "listen": f"127.0.0.1:{port}", "tail": {"start_position": "beginning"},
               "correlator": {"enabled": True, "retention": "3650d"}, "log_level": "warning"}
        if args.api_concurrency:
            cfg["web"] = {"api_max_concurrency": args.api_concurrency}
        (d / "c.yml").write_text(yaml.safe_dump(cfg))
        url = f"http://127.0.0.1:{port}"
        log = open(d / "run.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(d / "c.yml")],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            t = time.monotonic()
            while True:
                try:
                    text = httpx.get(url + "/metrics", timeout=5).text
                    done = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                               if ln.startswith(("pmta_delivered_total{", "pmta_bounced_total{")))
                    if done >= args.records:
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() - t > 600 or proc.poll() is not None:
                    print("ingestion did not finish:", (d / "run.log").read_text()[-2000:])
                    return 1
                time.sleep(0.5)
            print(f"ingested {args.records} records in {time.monotonic() - t:.1f}s; metrics page "
                  f"{len(text) // 1024} KiB")
            time.sleep(2)  # let the last commit land
            base = scrape_for(url, args.duration / 2)
            queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
            loader = mp.Process(target=load_process, args=(url, args.clients, args.duration + 2, queue))
            loader.start()
            time.sleep(2)  # clients connected and busy
            loaded = scrape_for(url, args.duration)
            counts = queue.get(timeout=120)
            loader.join(timeout=60)
            print(f"/metrics alone:                    {percentiles(base)}")
            print(f"/metrics with {args.clients} API clients:      {percentiles(loaded)}")
            total = sum(counts.values())
            print(f"API answers in {args.duration + 2:.0f}s: {total} ({total / (args.duration + 2):.0f}/s) "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(counts).items())))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The hub's own work off the event loop (encoding answers, merging, rendering text, reading discovery) runs on threads
of its own, never in asyncio's default executor: httpx (anyio) resolves host names there, and a target whose DNS
never answers filled it (6 threads on 2 CPUs), so answers that never ask that target waited for the resolver (hub
review 2026-12-06). Fake daemons and the hub on loopback, in the test's own event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.hub.fakes import (
    DEFAULT_THREADS,
    HUNG,
    HUNG_FOR,
    FakeDns,
    FakeHosts,
    Reply,
    Request,
    running_hub,
    search_page,
    small_default_executor,
    summary,
    timeline,
)

TIMEOUT = 1.0


def _daemon(req: Request) -> Reply:
    if req.path.startswith("/api/v1/timelines/"):
        return Reply(body={"job_id": "j", "message_id": "m@x", "rcpt": "u@x.example", "timelines": [timeline(id=1)],
                           "timelines_omitted": 0})
    if req.path == "/api/v1/flows":
        return Reply(body={"since": "2026-01-01T00:00:00Z", "until": None, "nodes": [], "edges": []})
    return search_page([summary(id=1)])


async def test_a_full_default_executor_holds_no_answer_of_the_hub(dns: FakeDns):
    """Every thread of the default executor held (as a resolver that never answers held them when host names were
    resolved there; the hub resolves them on threads of its own now, hub.resolver): no answer of the hub waits."""
    loop = asyncio.get_running_loop()
    small_default_executor()
    held = [loop.run_in_executor(None, dns.release.wait, HUNG_FOR) for _ in range(DEFAULT_THREADS)]
    try:
        async with FakeHosts(_daemon) as fleet, running_hub({
                "targets": [{"url": fleet.url("good"), "name": "good"}, f"http://{HUNG}:9469"], "timeout": TIMEOUT,
                }) as hub:
            hung = [asyncio.create_task(hub.get("/api/v1/search")) for _ in range(DEFAULT_THREADS)]
            for path, params in [("/api/v1/timelines/1", {"host": "good"}), ("/api/v1/timelines/1", {
                    "host": "good", "format": "text"}), ("/api/v1/flows", {}), ("/api/v1/flows", {"format": "text"}),
                    ("/api/v1/search", {}), ("/api/v1/search", {"format": "text"})]:
                try:  # the default executor is held for HUNG_FOR seconds: an answer before that did not wait for it
                    r = await asyncio.wait_for(hub.get(path, params=params), 8 * TIMEOUT)
                except TimeoutError:
                    pytest.fail(f"GET {path} {params} waited for the default executor")
                assert r.status_code == 200, (path, r.text)
            done = await asyncio.wait_for(asyncio.gather(*hung), 8 * TIMEOUT)
    finally:
        dns.release.set()  # before the loop's end waits for its default executor's threads
        await asyncio.gather(*held)
    assert [r.status_code for r in done] == [200] * DEFAULT_THREADS
    assert {m["host"] for r in done for m in r.json()["missing_hosts"]} == {f"{HUNG}:9469"}
    assert dns.asked == [HUNG]  # one lookup in flight, shared by every request (tests/hub/test_hub_dns.py)


def test_the_hubs_work_threads_are_few_named_and_made_again_after_a_shutdown():
    """Bounded and its own (named hub-work); shut down with a hub, and made again for the next one in the process."""
    from hub import threads

    gate = threading.Barrier(threads.WORK_THREADS, timeout=5)

    def name() -> str:
        gate.wait()  # as many at once as the pool runs: its every thread is seen
        return threading.current_thread().name

    names = [f.result(10) for f in [threads.WORK.submit(name) for _ in range(threads.WORK_THREADS)]]
    assert len(set(names)) == threads.WORK_THREADS <= 4 and all(n.startswith("hub-work") for n in names), names
    threads.shutdown()
    assert threads.WORK.submit(lambda: 1).result(5) == 1


async def test_a_hub_that_ends_leaves_no_thread_of_its_own():
    async with FakeHosts(_daemon) as fleet, running_hub({"targets": [fleet.url("good")]}) as hub:
        for path in ("/api/v1/search", "/api/v1/flows"):
            assert (await hub.get(path, params={"format": "text"})).status_code == 200
    for _ in range(100):
        left = [t.name for t in threading.enumerate() if t.name.startswith(("hub-work", "hub-decode"))]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert left == []

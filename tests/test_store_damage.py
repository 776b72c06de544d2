"""A damaged correlator store answers every /api/v1 route and /ui page with one clear 503, logged once.

The reviewer's fault: 80 KiB of garbage written into state_dir/watchtower.db made every API request a 500
`{"error":"internal error"}` and ~120 lines of traceback in the log (sqlite3.DatabaseError: database disk
image is malformed escaped the routes, which caught only OperationalError).
"""

from __future__ import annotations

import logging
import random
import sqlite3
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from correlator import api as api_module
from correlator import store as store_module
from tests.client import HTTP
from tests.test_correlator_support import Harness, batch

ROUTES = [
    ("/api/v1/search", {"rcpt": "u3500@gmail.com"}),
    ("/api/v1/search", {}),
    ("/api/v1/search", {"vmta": "vA"}),
    ("/api/v1/messages/m1@shop.example", {}),
    ("/api/v1/timeline", {"job_id": "J1", "rcpt": "u1@gmail.com"}),
    ("/api/v1/timelines/1", {}),
    ("/api/v1/flows", {"since": "30d"}),
    ("/api/v1/replies", {"since": "24h"}),
    ("/api/v1/lookup", {"job_id": "J1", "rcpt": "u1@gmail.com"}),
    ("/api/v1/lookup", {"message_id": "m1@shop.example"}),
]
PAGES = [
    ("/ui/", {"rcpt": "u3500@gmail.com"}),
    ("/ui/messages/m1@shop.example", {}),
    ("/ui/timeline", {"job_id": "J1", "rcpt": "u1@gmail.com"}),
    ("/ui/timelines/1", {}),
    ("/ui/flows", {"since": "30d"}),
]


def _filled(tmp_path: Path, n: int = 4000) -> Harness:
    """A store of n timelines (~1.4 MB), checkpointed into the main file."""
    h = Harness(tmp_path)
    rows = "\n".join(f"d,{1714550400 + i * 60},,s@shop.example,u{i}@gmail.com,2.0.0,vA,J{i % 7}" for i in range(n))
    h.commit(batch("/l/acct-many.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId\n" + rows))
    h.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return h


def damage(db: Path) -> None:
    """The reviewer's damage, made repeatable: 80 KiB of garbage from the fourth page on."""
    with open(db, "r+b") as fh:
        fh.seek(4096 * 3)
        fh.write(random.Random(0).randbytes(4096 * 20))


def expected(db: Path) -> str:
    return f"correlator store damaged: {db}: database disk image is malformed; see docs/runbooks.md"


@pytest.fixture(autouse=True)
def _fresh_store_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no store error logged yet (the limiter is per process)."""
    monkeypatch.setattr(api_module, "_store_log", api_module.LogOnce(api_module.STORE_LOG_INTERVAL))


@pytest.fixture
def damaged(tmp_path: Path) -> Harness:
    h = _filled(tmp_path)
    damage(h.db)
    yield h
    h.close()


def _client(h: Harness) -> httpx.AsyncClient:
    from exporter.http import build_app

    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://t")


def _damage_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "correlator store damaged" in r.getMessage()]


async def test_every_route_answers_a_damaged_store_with_one_clear_503(damaged: Harness,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client(damaged) as c:
        for path, params in ROUTES * 3:
            r = await c.get(path, params=params)
            assert r.status_code == 503, (path, r.text)
            assert r.json() == {"error": expected(damaged.db), "parameter": None, "status": 503}, path
    (line,) = _damage_lines(caplog)  # once, not once per request
    assert line.levelno == logging.ERROR and line.getMessage() == expected(damaged.db)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR and r is not line]


async def test_every_page_answers_a_damaged_store_with_the_same_503(damaged: Harness,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _client(damaged) as c:
        for path, params in PAGES:
            r = await c.get(path, params=params)
            assert r.status_code == 503, (path, r.text[:500])
            assert r.headers["content-type"].startswith("text/html")
            assert expected(damaged.db) in r.text, path
            assert "Traceback" not in r.text and "internal error" not in r.text
    assert len(_damage_lines(caplog)) == 1
    assert not [r for r in caplog.records if r.exc_info]


async def test_damage_found_by_a_pooled_connection_mid_query_is_the_same_503(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A connection opened before the damage (idle in the pool) meets it in a query, not at open."""
    h = _filled(tmp_path)
    async with _client(h) as c:
        assert (await c.get("/api/v1/search", params={"vmta": "vA"})).status_code == 200
        damage(h.db)
        h.conn.execute("BEGIN IMMEDIATE")  # a write moves the WAL index: the pooled reader drops its page cache
        h.conn.execute("INSERT OR REPLACE INTO checkpoints VALUES ('x', 1)")
        h.conn.execute("COMMIT")
        r = await c.get("/api/v1/search", params={"vmta": "vA", "limit": 500})
    assert (r.status_code, r.json()["error"]) == (503, expected(h.db))
    assert not [r for r in caplog.records if r.exc_info]
    h.close()


async def test_the_damage_is_logged_again_only_after_a_while(damaged: Harness, caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(api_module, "log_clock", lambda: clock[0])
    caplog.set_level(logging.INFO)
    async with _client(damaged) as c:
        for _ in range(5):
            await c.get("/api/v1/search")
        clock[0] += api_module.STORE_LOG_INTERVAL - 1
        await c.get("/api/v1/search")
        assert len(_damage_lines(caplog)) == 1
        clock[0] += 1
        await c.get("/api/v1/search")
    first, again = _damage_lines(caplog)
    assert again.getMessage() == expected(damaged.db) + " (5 more answers since)"


def test_the_read_pool_names_the_file_and_leaks_no_connection(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "foreign.db"
    db.write_bytes(b"this is not a database" * 500)
    opened: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*a: object, **kw: object) -> sqlite3.Connection:
        opened.append(real(*a, **kw))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", connect)
    pool = store_module.ReadPool(db)
    with pytest.raises(store_module.StoreDamaged) as exc, pool.connection() as conn:
        conn.execute("SELECT 1").fetchall()
    assert str(exc.value) == f"{db}: file is not a database"
    assert isinstance(exc.value, sqlite3.DatabaseError)  # callers catching sqlite3.Error still do
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        opened[0].execute("SELECT 1")


def test_a_running_daemon_answers_the_reviewers_damage_with_the_503_logged_once(tmp_path: Path,
                                                                                 watchtower_factory) -> None:
    """The reviewer's steps on a real daemon: 80 KiB overwritten in watchtower.db, then searches over HTTP."""
    from tests.conftest import AcctWriter, total, write_config

    cfg = write_config(tmp_path, correlator={"enabled": True})
    w = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(cfg).start()
    w.write(4000)
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 4000)
    wt.committed()
    db = tmp_path / "state" / "watchtower.db"
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    damage(db)
    for _ in range(3):
        r = HTTP.get(wt.url + "/api/v1/search", params={"rcpt": "u3500@gmail.com"}, timeout=10)
        assert (r.status_code, r.json()["error"]) == (503, expected(db))
    log = wt.log.read_text()
    assert log.count("correlator store damaged") == 1, log[-3000:]
    assert "Exception in ASGI application" not in log and "api.py" not in log
    assert wt.stop() == 0


def _sqlite_error(cls: type[sqlite3.Error], message: str, code: int | None) -> sqlite3.Error:
    exc = cls(message)
    if code is not None:
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("exc", "error"), [
    (_sqlite_error(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY),
     "correlator store busy: database is locked"),
    (_sqlite_error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR),
     "correlator store failed: disk I/O error"),
    (_sqlite_error(sqlite3.DatabaseError, "file is not a database", sqlite3.SQLITE_NOTADB),
     "correlator store damaged: {db}: file is not a database; see docs/runbooks.md"),
    (_sqlite_error(sqlite3.ProgrammingError, "Cannot operate on a closed database.", None),
     "correlator store failed: Cannot operate on a closed database."),
], ids=["busy", "io", "notadb", "closed"])
async def test_every_sqlite_error_of_a_query_is_a_503_saying_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  exc: sqlite3.Error, error: str) -> None:
    from correlator.timeline import Reader

    h = _filled(tmp_path, 10)

    def fail(*a: object, **kw: object) -> None:
        raise exc

    monkeypatch.setattr(Reader, "search", fail)
    async with _client(h) as c:
        r = await c.get("/api/v1/search")
    assert r.status_code == 503 and r.json()["error"] == error.format(db=h.db)
    assert [rec.getMessage() for rec in caplog.records] == [error.format(db=h.db)]
    h.close()

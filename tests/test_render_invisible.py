"""Invisible format characters (Unicode category Cf) are shown as escapes wherever a value from the accounting files
is shown as text: `job-\\u2060alice@gmail.com` (a WORD JOINER) looked exactly like `job-alice@gmail.com` on the
forensic pages and in `format=text` (review C). Every Cf character is escaped, ZWJ and ZWNJ included: a value here is
evidence (a job id, a recipient, a Message-Id, an SMTP reply), where an emoji sequence shown as its parts costs little
and a joiner that spoofs one value as another costs a wrong conclusion."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from correlator.render import safe
from exporter.config import load_config
from pages import build_pages_router
from tests.conftest import write_config
from tests.hub.fakes import summary
from tests.listener import serving
from tests.test_correlator_support import Harness, batch, corpus_harness

CF = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]


def _escaped(c: int) -> str:
    """The escape forms C0 and C1 controls had (`\\xNN` below U+0100), and 8 hex digits past the BMP."""
    if c < 0x100:
        return f"\\x{c:02x}"
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"


def test_every_format_character_is_escaped() -> None:
    assert len(CF) > 150  # (161 in Unicode 14)
    assert [safe(f"a{chr(c)}b") for c in CF] == [f"a{_escaped(c)}b" for c in CF]


@pytest.mark.parametrize(("value", "shown"), [
    ("job-\u2060alice@gmail.com", "job-\\u2060alice@gmail.com"),
    ("a\u200bb\u00adc\ufeffd\u180ee", "a\\u200bb\\xadc\\ufeffd\\u180ee"),
    ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),  # tag characters: 8 hex digits, never 5 read as 4+1
    ("\U0001f468\u200d\U0001f469 n\u200cm", "\U0001f468\\u200d\U0001f469 n\\u200cm"),  # ZWJ, ZWNJ too
    ("job\u202e1\x1b[31m\x9b", "job\\u202e1\\x1b[31m\\x9b"),  # as before: bidi, C0, C1
    ("caf\u00e9 \u4e2d\u6587 \U0001f600 \u00a0", "caf\u00e9 \u4e2d\u6587 \U0001f600 \u00a0"),  # visible text stays
])
def test_values_show_their_invisible_characters(value: str, shown: str) -> None:
    assert safe(value) == shown


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from corpus_harness(tmp_path)


JOB = "job-\u2060alice"
DIAG = "smtp;550 user\u200b unknown\ufeff"


async def test_text_format_shows_them_escaped(h: Harness) -> None:
    h.commit(batch("/l/acct-cf.csv", "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,header_Message-Id\n"
                   f"b,1714550400,s@shop.example,cf@gmail.com,5.0.0,\"{DIAG}\",v\u00ad1,{JOB},<m\u2064@x>\n"))
    async with h.client() as c:
        timeline = (await c.get("/api/v1/timeline", params={"job_id": JOB, "rcpt": "cf@gmail.com",
                                                            "format": "text"})).text
        search = (await c.get("/api/v1/search", params={"job_id": JOB, "format": "text"})).text
        js = (await c.get("/api/v1/search", params={"job_id": JOB})).json()
    assert (js["items"][0]["job_id"], js["items"][0]["vmta"]) == (JOB, "v\u00ad1")  # JSON keeps the exact value
    assert not any(unicodedata.category(ch) == "Cf" for ch in timeline + search)
    assert "job job-\\u2060alice" in timeline and "smtp;550 user\\u200b unknown\\ufeff" in timeline
    assert "job=job-\\u2060alice" in search and "vmta=v\\xad1" in search and "mid=m\\u2064@x" in search


class Answers:
    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers

    async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        return self.answers[path]


async def test_the_search_page_shows_them_escaped(tmp_path: Path) -> None:
    item = summary(id=7, job_id=JOB, rcpt="alice@gmail.com", message_id="m\u2064@x", vmta="v\u00ad1")
    body = {"items": [item], "next_cursor": None, "limit": 50, "scan_limited": False}
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Answers({"/api/v1/search": (200, body)})))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/", params={"job_id": "x"})
    assert r.status_code == 200
    results = r.text.split("</form>", 1)[1]
    assert not any(unicodedata.category(ch) == "Cf" for ch in results)
    assert "job-\\u2060alice" in results and "m\\u2064@x" in results and "v\\xad1" in results

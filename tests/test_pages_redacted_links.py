"""With `hash_recipients`, a Message-Id or jobId that holds the recipient's address is stored and shown with `<rcpt>`
in its place. Lookups hash the value as logged, so the shown form finds nothing: the /ui pages show it as text that
says so (a title), never as a link or a search, and every link they make opens a page (real daemon and hub, real
HTTP, and headless Chromium following the search rows' links)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.client import HTTP
from tests.conftest import ACCT_HEADER, Watchtower, write_config
from tests.hub.cluster import HubProcess, acct_row

pytestmark = pytest.mark.integration
WHERE = ["daemon", "hub"]
MID_RCPT, MID = "bob.smith@yahoo.com", "bob.smith@yahoo.com.1234@shop"  # the recipient's address in its Message-Id
JOB_RCPT, JOB = "frank@gmail.com", "J-frank@gmail.com"  # ... in its jobId
PLAIN_RCPT, PLAIN_MID = "carol@gmail.com", "c1@shop"
SHOWN_MID, SHOWN_JOB = "<rcpt>.1234@shop", "J-<rcpt>"
TITLE = re.compile(r'<span class="redacted" title="([^"]+)">([^<]*)</span>')


class Stack:
    def __init__(self, daemon: Watchtower, hub: HubProcess) -> None:
        self.daemon, self.hub = daemon, hub

    def url(self, where: str) -> str:
        return self.daemon.url if where == "daemon" else self.hub.url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("redacted")
    (root / "logs").mkdir()
    base = float(int(time.time() // 60 * 60) - 3600)
    rows = [ACCT_HEADER + ",header_Message-Id",
            acct_row("d", base + 10, base, "bounce@news.example", MID_RCPT, "vmta-x1", "J1", MID, "2.0.0 (ok)",
                     "smtp;250 ok"),
            acct_row("d", base + 20, base, "bounce@news.example", JOB_RCPT, "vmta-x1", JOB, "f1@shop", "2.0.0 (ok)",
                     "smtp;250 ok"),
            acct_row("d", base + 30, base, "bounce@news.example", PLAIN_RCPT, "vmta-x1", "J2", PLAIN_MID, "2.0.0 (ok)",
                     "smtp;250 ok")]
    (root / "logs" / "acct-2026-01-01-0000.csv").write_text("\n".join(rows) + "\n")
    cfg = write_config(root, correlator={"enabled": True, "hash_recipients": True})
    daemon = Watchtower(cfg).start()
    hub = HubProcess(root / "hub", [daemon.url], 5.0)
    try:
        hub.start()
        deadline = time.monotonic() + 30
        while len(HTTP.get(daemon.url + "/api/v1/search", timeout=5).json()["items"]) < 3:
            assert time.monotonic() < deadline, "the daemon did not store the 3 timelines"
            time.sleep(0.1)
        yield Stack(daemon, hub)
    finally:
        hub.stop()
        daemon.stop()


def _page(url: str, status: int = 200, **kw: Any) -> str:
    r = HTTP.get(url, timeout=10, **kw)
    assert r.status_code == status, (url, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    return r.text.split("<main>", 1)[1]


def _links(body: str) -> list[str]:
    """The page's own links (the Grafana ones go elsewhere), as a browser reads them."""
    return [html.unescape(h) for h in re.findall(r'<a [^>]*?href="([^"]+)"', body) if h.startswith("/")]


def _row(body: str, text: str) -> str:
    [row] = [r for r in re.findall(r"<tr><td>.*?</tr>", body) if text in r]
    return row


@pytest.mark.parametrize("where", WHERE)
def test_the_api_serves_the_redacted_keys_with_rcpt_hashed(stack: Stack, where: str) -> None:
    """What a client reads: the value with `<rcpt>` in the recipient's place, on a row whose `rcpt_hashed` is true."""
    items = HTTP.get(stack.url(where) + "/api/v1/search", timeout=10).json()["items"]
    got = {(it["message_id"], it["job_id"], it["rcpt_hashed"]) for it in items}
    assert got == {(SHOWN_MID, "J1", True), ("f1@shop", SHOWN_JOB, True), (PLAIN_MID, "J2", True)}
    # the shown forms find nothing; the values as logged find their timelines
    assert HTTP.get(stack.url(where) + "/api/v1/messages/" + quote(SHOWN_MID, safe="@"), timeout=10).status_code == 404
    assert HTTP.get(stack.url(where) + "/api/v1/messages/" + MID, timeout=10).status_code == 200
    assert HTTP.get(stack.url(where) + "/api/v1/search", params={"job_id": SHOWN_JOB}, timeout=10).json()["items"] == []
    assert len(HTTP.get(stack.url(where) + "/api/v1/search", params={"job_id": JOB}, timeout=10).json()["items"]) == 1


@pytest.mark.parametrize("where", WHERE)
def test_a_redacted_message_id_or_job_is_text_with_a_title_not_a_link(stack: Stack, where: str) -> None:
    body = _page(stack.url(where) + "/ui/")
    row = _row(body, "&lt;rcpt&gt;.1234@shop")
    assert "/ui/messages/" not in row and "rcpt%3E" not in row and "%3Crcpt" not in row
    [(title, shown)] = TITLE.findall(row)
    assert shown == "&lt;rcpt&gt;.1234@shop"
    assert "redacted" in title and "hash_recipients" in title
    # the row still opens its timeline, by id
    [href] = _links(row)
    assert re.fullmatch(r"/ui/timelines/\d+(\?host=[^&]+)?", href), href
    assert MID not in body and MID_RCPT not in body
    job_row = _row(body, "J-&lt;rcpt&gt;")
    [(title, shown)] = TITLE.findall(job_row)
    assert shown == "J-&lt;rcpt&gt;" and "redacted" in title
    assert "job_id=" not in job_row
    # a key without the recipient's address is linked as before, and its link finds the message
    plain = _row(body, PLAIN_MID)
    assert TITLE.findall(plain) == []
    assert f'/ui/messages/{PLAIN_MID}"' in plain


@pytest.mark.parametrize("where", WHERE)
def test_every_link_of_the_pages_opens_a_page(stack: Stack, where: str) -> None:
    """The search page, and every page it links to, and theirs: no link is a 404 (nor a search for a shown form)."""
    base = stack.url(where)
    seen: set[str] = set()
    todo = ["/ui/"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        body = _page(base + path)
        assert 'id="error"' not in body and 'id="none"' not in body, path
        todo += [h for h in _links(body) if h.split("?")[0] not in ("/ui/", "/ui/flows")]
    assert len([p for p in seen if p.startswith("/ui/timelines/")]) == 3
    assert f"/ui/messages/{PLAIN_MID}" in seen
    assert not [p for p in seen if "rcpt" in p], seen


@pytest.mark.parametrize("where", WHERE)
def test_the_timeline_and_message_pages_say_a_job_is_redacted(stack: Stack, where: str) -> None:
    base = stack.url(where)
    body = _page(base + "/ui/messages/f1@shop")  # frank's: his jobId holds his address
    [(title, shown)] = TITLE.findall(body)
    assert shown == "J-&lt;rcpt&gt;" and "redacted" in title
    assert JOB not in body and JOB_RCPT not in body
    body = _page(base + "/ui/messages/" + MID)  # asked by the Message-Id as logged: found, and echoed without the
    # recipient's address, which would stand beside its hash (review 2026-12-07), saying it is redacted
    assert 'id="message-id">&lt;<span class="redacted" title="' in body
    assert [shown for _title, shown in TITLE.findall(body)] == ["&lt;rcpt&gt;.1234@shop"]
    assert MID_RCPT not in body.replace(f'value="{MID}"', "")  # (the search box keeps what was typed)


@pytest.mark.parametrize("where", WHERE)
def test_a_shown_form_typed_back_says_why_it_finds_nothing(stack: Stack, where: str) -> None:
    """An operator who copies `<rcpt>.1234@shop` or `J-<rcpt>` from a page into the search box is told what `<rcpt>`
    stands for, not only "not found"."""
    base = stack.url(where)
    body = _page(base + "/ui/messages/" + quote(SHOWN_MID, safe="@"), 404)
    assert 'id="redacted-hint"' in body
    body = _page(base + "/ui/", params={"job_id": SHOWN_JOB})
    assert 'id="none"' in body and 'id="redacted-hint"' in body
    body = _page(base + "/ui/", params={"job_id": "J2"})
    assert 'id="redacted-hint"' not in body


# --- in a browser --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium as tests/browser/conftest.py starts it (its `driver` is the ui-stack group's)."""
    from tests.browser.conftest import CHROMEDRIVER, CHROMIUM

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extras")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-redacted')}"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(20)
    yield drv
    drv.quit()


@pytest.mark.browser
@pytest.mark.parametrize("where", WHERE)
def test_in_a_browser_every_search_row_link_opens_its_page(chromium: Any, stack: Stack, where: str) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(stack.url(where) + "/ui/")
    rows = chromium.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 3
    cell = next(r for r in rows if SHOWN_MID in r.text).find_elements(By.TAG_NAME, "td")[3]
    assert cell.find_elements(By.TAG_NAME, "a") == []
    assert "redacted" in cell.find_element(By.CSS_SELECTOR, "span.redacted").get_attribute("title")
    hrefs = [a.get_attribute("href") for r in rows for a in r.find_elements(By.TAG_NAME, "a")]
    assert len(hrefs) == 5  # 3 timelines by id, the Message-Ids of carol and frank
    for href in hrefs:
        chromium.get(href)
        assert chromium.find_elements(By.CSS_SELECTOR, "section.rcpt"), href
        assert chromium.find_elements(By.ID, "error") == [], href

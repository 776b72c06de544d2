"""The /ui pages in a real browser, on the hub and on a daemon: forensic order, Sankey widths equal
to /api/v1/flows, no console errors, no request to anything but loopback. Screenshots go to
/tmp/watchtower-screens/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pages.views import VMTA_DASHBOARD_UID
from tests.browser.conftest import SCREENS
from tests.client import HTTP
from tests.hub.cluster import COMPLAINED_MESSAGE, COMPLAINED_RCPT, Cluster

pytestmark = [pytest.mark.browser, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]


def visit(driver: Any, url: str, shot: str) -> None:
    driver.get_log("browser")  # drop anything older
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    driver.save_screenshot(str(SCREENS / f"{shot}.png"))
    assert_clean(driver)


def follow(driver: Any, act: Callable[[], None], until_id: str) -> None:
    """Do what leaves the page, then wait for an element of the page it leads to: waiting for the id alone
    can be met by the page being left (the landing page also lists #results), which raced in CI."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    left = driver.find_element(By.TAG_NAME, "html")
    act()
    wait = WebDriverWait(driver, 10)
    stale = expected_conditions.staleness_of(left)

    def gone(d: Any) -> bool:
        try:
            return stale(d)
        except WebDriverException as exc:  # chromedriver, asked mid-navigation: "Node with given id does not belong
            if "does not belong to the document" in str(exc):  # to the document" instead of a stale element
                return True
            raise

    wait.until(gone, message=f"still on {driver.current_url}")
    wait.until(lambda d: d.find_elements(By.ID, until_id), message=driver.current_url)


def assert_clean(driver: Any) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    urls = driver.execute_script(
        "return performance.getEntries().filter(e => e.name && e.name.includes('://')).map(e => e.name)")
    hosts = {urlsplit(u).hostname for u in urls if not u.startswith("data:")}
    assert hosts <= {"127.0.0.1"}, urls


def bases(c: Cluster) -> dict[str, str]:
    wt = c.hosts[1].wt
    assert wt is not None
    return {"hub": c.hub.url, "daemon": wt.url}


def test_vmta_dashboard_uid_is_the_shipped_dashboard():
    dash = json.loads((REPO / "grafana" / "dashboards" / "watchtower-vmta.json").read_text())
    assert dash["uid"] == VMTA_DASHBOARD_UID


@pytest.mark.parametrize("where", ["hub", "daemon"])
def test_forensic_page_of_a_bounced_then_complained_message_shows_its_events_in_order(driver, browser_cluster, where):
    from selenium.webdriver.common.by import By

    base = bases(browser_cluster)[where]
    visit(driver, base + "/ui/", f"search-{where}")
    box = driver.find_element(By.NAME, "message_id")
    box.send_keys(f"<{COMPLAINED_MESSAGE}>")
    follow(driver, box.submit, "message-id")
    assert driver.find_element(By.ID, "message-id").text == f"<{COMPLAINED_MESSAGE}>"
    driver.save_screenshot(str(SCREENS / f"forensic-{where}.png"))
    assert_clean(driver)
    [section] = driver.find_elements(By.CSS_SELECTOR, "section.rcpt")
    assert COMPLAINED_RCPT in section.find_element(By.TAG_NAME, "h2").text
    assert "complained" in section.find_element(By.CSS_SELECTOR, ".badge").text
    rows = section.find_elements(By.CSS_SELECTOR, "tr.event")
    assert [r.get_attribute("data-kind") for r in rows] == ["queued", "deferred", "bounced", "complaint"]
    times = [float(r.get_attribute("data-ts")) for r in rows]
    assert times == sorted(times) and len(set(times)) == 4
    api = HTTP.get(base + f"/api/v1/messages/{COMPLAINED_MESSAGE}").json()["recipients"][0]["events"]
    for row, ev in zip(rows, api, strict=True):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == ev["kind"]
        if ev["kind"] != "queued":  # synthetic; every other event names the file:line it came from
            assert cells[8] == ev["source"] and ".csv:" in cells[8]
        if ev["kind"] in ("deferred", "bounced"):
            assert cells[4] == "vmta-b1" and cells[5] == "10.1.1.1" and ev["dsn_status"] in cells[6]
            link = row.find_element(By.CSS_SELECTOR, "a.grafana").get_attribute("href")
            assert f"/d/{VMTA_DASHBOARD_UID}/" in link and "var-vmta=vmta-b1" in link
    bounced = rows[2].find_elements(By.TAG_NAME, "td")[6].text
    assert "<script>alert(1)</script>" in bounced  # shown as text, never run
    assert driver.find_elements(By.TAG_NAME, "script") == []
    if where == "hub":
        assert browser_cluster.hosts[1].wt.listen in section.find_element(By.CSS_SELECTOR, ".meta").text


@pytest.mark.parametrize("where", ["hub", "daemon"])
def test_sankey_link_widths_match_the_flows_api(driver, browser_cluster, where):
    from selenium.webdriver.common.by import By

    base = bases(browser_cluster)[where]
    since = str(int(browser_cluster.base) - 3600)
    flows = HTTP.get(base + "/api/v1/flows", params={"since": since}).json()
    visit(driver, base + f"/ui/flows?since={since}", f"flows-{where}")
    svg = driver.find_element(By.ID, "sankey")
    px = float(svg.get_attribute("data-px-per-attempt"))
    links = {p.get_attribute("data-edge"): p for p in svg.find_elements(By.CSS_SELECTOR, "path.link")}
    want = {e["id"]: e["detail__delivered"] + e["detail__bounced"] + e["detail__deferred"] for e in flows["edges"]}
    assert set(links) == {k for k, v in want.items() if v > 0} and len(links) >= 3
    widths = {k: float(p.get_attribute("stroke-width")) for k, p in links.items()}
    for edge_id, width in widths.items():
        assert width == pytest.approx(want[edge_id] * px, abs=0.002), edge_id
        rendered = driver.execute_script("return parseFloat(getComputedStyle(arguments[0]).strokeWidth)",
                                         links[edge_id])
        assert rendered == pytest.approx(width, abs=0.01), edge_id
    biggest = max(want, key=lambda k: want[k])
    smallest = min((k for k in want if want[k]), key=lambda k: want[k])
    assert widths[biggest] / widths[smallest] == pytest.approx(want[biggest] / want[smallest], rel=1e-3)
    table = {r.get_attribute("data-edge"): r.text for r in driver.find_elements(By.CSS_SELECTOR, "#links tr[data-edge]")}
    assert set(table) == set(want)

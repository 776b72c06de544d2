"""Headless Debian Chromium driven by Selenium through the system chromedriver (never downloaded),
plus a three-host cluster and hub whose pages it opens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub.cluster import Cluster, acquire, release

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENS = Path("/tmp/watchtower-screens")


@pytest.fixture(scope="session")
def browser_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield acquire(lambda: tmp_path_factory.mktemp("cluster"))
    release()


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (make system-deps does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extras")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                "--disable-default-apps", "--no-default-browser-check", "--window-size=1400,1200",
                # any name but loopback fails to resolve: nothing can leave the machine, even by mistake
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    drv = webdriver.Chrome(service=service, options=opts)
    drv.set_page_load_timeout(20)
    SCREENS.mkdir(parents=True, exist_ok=True)
    yield drv
    drv.quit()

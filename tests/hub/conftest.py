"""One three-host cluster + hub, shared with tests/browser (starting it is the slow part)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.cluster import Cluster, acquire, release
from tests.hub.fakes import FakeDns, fake_dns


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield acquire(lambda: tmp_path_factory.mktemp("cluster"))
    release()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    """socket.getaddrinfo wrapped: `fakes.HUNG` hangs, `fakes.DEAD` fails, `answers` are the test's (fakes.fake_dns)."""
    with fake_dns(monkeypatch) as fake:
        yield fake

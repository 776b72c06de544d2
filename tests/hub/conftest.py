"""One three-host cluster + hub, shared with tests/browser (starting it is the slow part)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.cluster import Cluster, acquire, release


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield acquire(lambda: tmp_path_factory.mktemp("cluster"))
    release()

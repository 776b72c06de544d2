"""One three-host cluster + hub for the whole tests/hub directory (starting it is the slow part)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.cluster import Cluster, start_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("hub-cluster"), timeout=1.0)
    yield c
    c.stop()

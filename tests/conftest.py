"""Shared fixtures: real registries and a real `connectors serve`, each on a free port.

Tests that need something this machine lacks skip with a printed reason, except under
CONNECTORS_REQUIRE_ALL=1 (CI), where a missing peer fails the test instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.support import testcluster
from tests.support.devpi import devpi_server
from tests.support.standalone import CONNECTORS, Standalone
from tests.support.testcluster import TestCluster

REQUIRE_ALL = os.environ.get("CONNECTORS_REQUIRE_ALL") == "1"


def require(available: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a peer the test needs is missing."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"CONNECTORS_REQUIRE_ALL=1 but {reason}")
    print(f"\nskipping: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pypi_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with localregistry.pypiserver(tmp_path_factory.mktemp("pypiserver")) as registry:
        yield registry


@pytest.fixture(scope="module")
def devpi_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with devpi_server(tmp_path_factory.mktemp("devpi")) as registry:
        yield registry


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    server = Standalone(tmp_path_factory.mktemp("standalone"))
    server.start()
    yield server
    server.stop()
    # Every module ends with a scan of all a client or operator saw during it.
    leaked = server.leaked_places()
    assert not leaked, f"a registry password reached: {leaked}"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """A real control plane (etcd, kube-apiserver, kube-controller-manager) with the
    connectors CRDs installed, shared by the whole session."""
    missing = testcluster.missing_reason()
    require(missing is None, missing or "")
    with testcluster.running(tmp_path_factory.mktemp("cluster")) as cluster:
        subprocess.run(
            [CONNECTORS, "install", "crds", "--kubeconfig", str(cluster.kubeconfig)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield cluster


LONG_FORM = "tests/node/test_zz_token_renewal_on_a_node.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The node tests first, then everything else while the node idles, then the
    long-form renewal test (its Pod's first token has expired by then), and the run-wide
    leak scan last."""

    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith("tests/test_zz_nothing_leaked.py"):
            return 3
        if item.nodeid.startswith(LONG_FORM):
            return 2
        return 0 if item.nodeid.startswith("tests/node/") else 1

    items.sort(key=rank)

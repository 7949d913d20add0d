"""Every common client, configured by nothing but the files `connectors render` writes, with
two connectors in use at once (pypiserver and devpi, both behind the one standalone proxy
at 127.0.0.1, so a `.netrc` cannot tell them apart by host)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.support import clients
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.wheels import make_wheel

NS = "clients"
PYPISERVER, DEVPI = "pypiserver", "devpi"


@pytest.fixture(scope="module")
def both(
    standalone: Standalone, pypi_registry: LocalRegistry, devpi_registry: LocalRegistry
) -> Standalone:
    standalone.write(
        NS,
        "registries.yaml",
        secret_manifest("pypiserver-secret", pypi_registry.username, pypi_registry.password),
        secret_manifest("devpi-secret", devpi_registry.username, devpi_registry.password),
        connector_manifest(PYPISERVER, pypi_registry.url, secret="pypiserver-secret"),
        connector_manifest(
            DEVPI, devpi_registry.url, secret="devpi-secret", params={"simplePath": "+simple"}
        ),
    )
    standalone.wait_ready(NS, PYPISERVER)
    standalone.wait_ready(NS, DEVPI)
    return standalone


@pytest.fixture(scope="module")
def published(both: Standalone, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One project in each registry, uploaded with twine and the two-connector `.pypirc`;
    returns connector name -> project name."""
    work = tmp_path_factory.mktemp("published")
    both.render(NS, PYPISERVER, "pypirc", into=work, also=(DEVPI,))
    projects = {PYPISERVER: "only-in-pypiserver", DEVPI: "only-in-devpi"}
    for connector, project in projects.items():
        wheel = make_wheel(work / connector, project, "1.0", payload=project.encode())
        repository = "connectors-pypi" if connector == PYPISERVER else f"connectors-pypi-{DEVPI}"
        upload = clients.run([
            sys.executable, "-m", "twine", "upload", "--non-interactive",
            "--disable-progress-bar", "--config-file", str(work / ".pypirc"),
            "--repository", repository, str(wheel),
        ])  # fmt: skip
        assert upload.returncode == 0, clients.explain(upload)
    return projects


def test_one_netrc_serves_two_connectors_on_one_host(
    both: Standalone, published: dict[str, str], tmp_path: Path
):
    files = both.render(NS, PYPISERVER, "netrc", into=tmp_path, also=(DEVPI,))
    assert files[".netrc"].count("machine 127.0.0.1") == 1  # one host, so one entry
    for connector, project in published.items():
        index = f"{both.connector_url(NS, connector)}/simple/"  # no credentials in the URL
        pip = clients.run(
            [
                sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                "--disable-pip-version-check", "--index-url", index,
                "--target", str(tmp_path / f"pip-{connector}"), f"{project}==1.0",
            ],
            env={"NETRC": str(tmp_path / ".netrc"), "PIP_CONFIG_FILE": "/dev/null"},
        )  # fmt: skip
        assert pip.returncode == 0, clients.explain(pip)
        uv = clients.run(
            [
                str(clients.BIN / "uv"), "pip", "install", "--no-config", "--no-cache",
                "--no-deps", "--python", sys.executable, "--index-url", index,
                "--target", str(tmp_path / f"uv-{connector}"), f"{project}==1.0",
            ],
            env={"NETRC": str(tmp_path / ".netrc")},
        )  # fmt: skip
        assert uv.returncode == 0, clients.explain(uv)

"""devpi-server keeps its index under /<user>/<index>/+simple/: the simplePath parameter
maps the client's /simple/ there, and uploads to the proxy root land in the index."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.support import clients, wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.wheels import make_wheel, sha256_of

NS = "devpi"


@pytest.fixture(scope="module")
def devpi(standalone: Standalone, devpi_registry: LocalRegistry) -> Standalone:
    standalone.write(
        NS,
        "devpi.yaml",
        secret_manifest("registry-secret", devpi_registry.username, devpi_registry.password),
        connector_manifest("dev", devpi_registry.url, params={"simplePath": "+simple"}),
    )
    standalone.wait_ready(NS, "dev")
    return standalone


def test_twine_upload_then_pip_and_uv_install_through_devpi(
    devpi: Standalone, devpi_registry: LocalRegistry, tmp_path: Path
):
    wheel = make_wheel(tmp_path / "dist", "devpi-sample", "1.2.3", payload=b"devpi" * 100)
    devpi.render(NS, "dev", "pypirc", "pipconf", "uvtoml", into=tmp_path)
    upload = clients.twine_upload(tmp_path / ".pypirc", wheel)
    assert upload.returncode == 0, clients.explain(upload)

    direct = wire.request("GET", f"{devpi_registry.url}/+simple/devpi-sample/")
    assert wheel.name.encode() in direct.body  # it really is in devpi's index

    pip = clients.pip_install(
        tmp_path / "pip.conf", "devpi-sample==1.2.3", target=tmp_path / "pip-site"
    )
    assert pip.returncode == 0, clients.explain(pip)
    assert (tmp_path / "pip-site" / "devpi_sample" / "payload.bin").read_bytes() == b"devpi" * 100
    uv = clients.uv_pip_install(
        tmp_path / "uv.toml", "devpi-sample==1.2.3", target=tmp_path / "uv-site"
    )
    assert uv.returncode == 0, clients.explain(uv)


def test_devpi_links_are_rewritten_onto_the_proxy(devpi: Standalone, tmp_path: Path):
    wheel = make_wheel(tmp_path / "dist", "devpi-links", "0.1", payload=b"x")
    devpi.render(NS, "dev", "pypirc", into=tmp_path)
    assert clients.twine_upload(tmp_path / ".pypirc", wheel).returncode == 0
    base = devpi.connector_url(NS, "dev")
    page = wire.request(
        "GET", f"{base}/simple/devpi-links/", headers=wire.basic(devpi.token(NS, "dev"))
    )
    assert page.status == 200
    assert f'href="{base}/_sha256/{sha256_of(wheel)}/+f/'.encode() in page.body
    assert b"#sha256=" in page.body


def test_a_devpi_connector_without_simple_path_is_told_the_index_is_elsewhere(
    standalone: Standalone, devpi_registry: LocalRegistry
):
    """The natural first try: devpi's index address, no simplePath. The password is right;
    the diagnosis must not send the user to it."""
    standalone.write(
        NS,
        "first-try.yaml",
        secret_manifest("first-try-secret", devpi_registry.username, devpi_registry.password),
        connector_manifest("first-try", devpi_registry.url, secret="first-try-secret"),
    )
    ready = standalone.wait_ready(NS, "first-try", status="False")
    assert ready["reason"] == "ConnectionFailed", ready
    assert "simplePath" in ready["message"] and "+simple" in ready["message"]
    assert "password" not in ready["message"]

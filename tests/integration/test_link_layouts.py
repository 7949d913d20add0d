"""Registries link to files in different ways; through the proxy every way ends on the
proxy, attributes intact, and credentials go only where the Connector's author said: its
own host and the address extensions it names, never a class's default extension."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import clients, layouts, wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.wheels import make_wheel, metadata_text

NS = "layouts"
BUILTIN_PYPI = Path(__file__).parents[2] / "src" / "connectors" / "classes" / "pypi.yaml"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[layouts.Layouts]:
    wheel = make_wheel(tmp_path_factory.mktemp("wheels"), "demo", "1.0", payload=b"layout")
    served = layouts.Layouts(wheel, metadata_text("demo", "1.0"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def proxied(standalone: Standalone, upstream: layouts.Layouts) -> Standalone:
    standalone.write(
        NS,
        "layouts.yaml",
        secret_manifest("registry-secret", layouts.USERNAME, layouts.PASSWORD),
        connector_manifest("nexus", upstream.index.url + "/repository/pypi"),
        connector_manifest(
            "pypi", upstream.index.url, extensions={"files": upstream.files.url + "/files"}
        ),
    )
    standalone.wait_ready(NS, "nexus")
    standalone.wait_ready(NS, "pypi")
    return standalone


def page(proxied: Standalone, name: str, accept: str = "text/html") -> wire.Reply:
    reply = wire.request(
        "GET",
        proxied.connector_url(NS, name) + "/simple/demo/",
        headers={**wire.basic(proxied.token(NS, name)), "Accept": accept},
    )
    assert reply.status == 200, reply
    return reply


def anchors(body: bytes) -> list[str]:
    return re.findall(r"<a [^>]*>", body.decode())


def test_relative_links_become_proxy_links_with_every_attribute_kept(
    proxied: Standalone, upstream: layouts.Layouts
):
    base = proxied.connector_url(NS, "nexus")
    tags = anchors(page(proxied, "nexus").body)
    wheel_tag = next(t for t in tags if upstream.wheel.name in t)
    digest = upstream._file_hash()
    # Under the prefix that lets the proxy answer from its cache of files, by that hash.
    expected_href = (
        f'href="{base}/_sha256/{digest}/packages/demo/1.0/{upstream.wheel.name}#sha256={digest}"'
    )
    assert wheel_tag == f"<a {expected_href} {upstream._link_attributes()}>"


def test_links_to_a_host_the_connector_does_not_name_are_left_alone(
    proxied: Standalone, upstream: layouts.Layouts
):
    tags = anchors(page(proxied, "nexus").body)
    assert any(f'href="{upstream.files.url}/elsewhere/' in t for t in tags)
    refused = wire.request(
        "GET",
        proxied.connector_url(NS, "nexus") + "/_ext/files/x.whl",
        headers=wire.basic(proxied.token(NS, "nexus")),
    )
    assert refused.status == 404
    assert upstream.hits_on(upstream.files) == []


def links_covered(proxied: Standalone, name: str) -> dict[str, str]:
    row = proxied.status_row(NS, name)
    conditions = (row["status"].get("conditions") or []) if row else []
    return next((c for c in conditions if c["type"] == "LinksCovered"), {})


def test_a_connector_whose_pages_link_to_a_host_it_does_not_cover_says_so_in_its_status(
    proxied: Standalone, upstream: layouts.Layouts
):
    # nexus's project page links some files to the files host, which it does not name:
    # those downloads would go around the proxy, and the status says so, by host.
    uncovered = links_covered(proxied, "nexus")
    assert (uncovered.get("status"), uncovered.get("reason")) == ("False", "UncoveredLinks")
    assert uncovered["message"].startswith(
        f"/repository/pypi/simple/demo/ links to files on {upstream.files.url}, which this "
        "connector does not cover"
    )
    assert "spec.addressExtensions" in uncovered["message"]
    # The same registry, with the files host named as an extension: everything covered.
    covered = links_covered(proxied, "pypi")
    assert covered.get("status") == "True", covered
    assert proxied.ready(NS, "nexus")["status"] == "True"  # a warning, not a failure


def test_pep_691_json_urls_are_rewritten_and_other_fields_kept(
    proxied: Standalone, upstream: layouts.Layouts
):
    reply = page(proxied, "nexus", accept=layouts.SIMPLE_JSON)
    assert (reply.header("Content-Type") or "").startswith(layouts.SIMPLE_JSON)
    assert reply.header("Vary") == "Accept"
    document = json.loads(reply.body)
    wheel = next(f for f in document["files"] if f["filename"] == upstream.wheel.name)
    base = proxied.connector_url(NS, "nexus")
    # The hash sits beside the URL in JSON, and the URL gets the cache's prefix all the same.
    cached = f"{base}/_sha256/{upstream._file_hash()}"
    assert wheel["url"] == f"{cached}/packages/demo/1.0/{upstream.wheel.name}"
    assert wheel["provenance"] == f"{base}/packages/demo/1.0/{upstream.wheel.name}.provenance"
    assert wheel["core-metadata"] == {
        "sha256": upstream._link_attributes().split("sha256=")[1].split('"')[0]
    }
    assert (wheel["requires-python"], wheel["yanked"]) == (">=3.8", False)


def test_core_metadata_file_is_served_through_the_proxy(
    proxied: Standalone, upstream: layouts.Layouts
):
    url = f"{proxied.connector_url(NS, 'nexus')}/packages/demo/1.0/{upstream.wheel.name}.metadata"
    reply = wire.request("GET", url, headers=wire.basic(proxied.token(NS, "nexus")))
    assert reply.status == 200
    assert reply.body == upstream.metadata


def test_pip_installs_from_a_nexus_style_layout(proxied: Standalone, tmp_path: Path):
    proxied.render(NS, "nexus", "pipconf", into=tmp_path)
    result = clients.pip_install(tmp_path / "pip.conf", "demo==1.0", target=tmp_path / "site")
    assert result.returncode == 0, clients.explain(result)
    assert (tmp_path / "site" / "demo" / "payload.bin").read_bytes() == b"layout"


BASIC = "Basic " + base64.b64encode(f"{layouts.USERNAME}:{layouts.PASSWORD}".encode()).decode()


def test_absolute_links_to_an_extension_the_connector_names_carry_its_credentials(
    proxied: Standalone, upstream: layouts.Layouts, tmp_path: Path
):
    base = proxied.connector_url(NS, "pypi")
    tags = anchors(page(proxied, "pypi").body)
    cached = f"{base}/_sha256/{upstream._file_hash()}"
    assert any(f'href="{cached}/_ext/files/ab/cd/{upstream.wheel.name}#sha256=' in t for t in tags)
    before = len(upstream.hits_on(upstream.files))
    proxied.render(NS, "pypi", "pipconf", into=tmp_path)
    result = clients.pip_install(tmp_path / "pip.conf", "demo==1.0", target=tmp_path / "site")
    assert result.returncode == 0, clients.explain(result)
    file_hits = upstream.hits_on(upstream.files)[before:]
    assert file_hits, "the files host served the wheel"
    assert all(h.authorization == BASIC for h in file_hits)  # as Alauda documents


def test_a_class_default_extension_keeps_downloads_on_the_proxy_without_credentials(
    proxied: Standalone, upstream: layouts.Layouts, tmp_path: Path
):
    # As the built-in class does for PyPI's files host: the class names the host, the
    # Connector names nothing, and its credentials go nowhere but its own host.
    document = yaml.safe_load(BUILTIN_PYPI.read_text())
    document["metadata"]["name"] = "pypi-with-cdn"
    document["spec"]["addressExtensions"] = [
        {"name": "cdn", "type": "string", "default": upstream.files.url + "/files"}
    ]
    proxied.write(NS, "class.yaml", yaml.safe_dump(document), connector_manifest(
        "by-default", upstream.index.url, class_name="pypi-with-cdn"))  # fmt: skip
    proxied.wait_ready(NS, "by-default")
    base = proxied.connector_url(NS, "by-default")
    tags = anchors(page(proxied, "by-default").body)
    cached = f"{base}/_sha256/{upstream._file_hash()}"
    assert any(f'href="{cached}/_ext/cdn/ab/cd/{upstream.wheel.name}#sha256=' in t for t in tags)
    before = len(upstream.hits_on(upstream.files))
    proxied.render(NS, "by-default", "pipconf", into=tmp_path)
    result = clients.pip_install(tmp_path / "pip.conf", "demo==1.0", target=tmp_path / "site")
    assert result.returncode == 0, clients.explain(result)
    file_hits = upstream.hits_on(upstream.files)[before:]
    assert file_hits and all(h.authorization is None for h in file_hits)


def test_index_host_gets_the_connectors_credentials_and_never_the_clients_token(
    proxied: Standalone, upstream: layouts.Layouts
):
    token = proxied.token(NS, "nexus")
    reply = wire.request(
        "GET", proxied.connector_url(NS, "nexus") + "/simple/demo/", headers=wire.basic(token)
    )
    assert reply.status == 200
    expected = BASIC
    page_hits = [
        h for h in upstream.hits_on(upstream.index) if h.path == "/repository/pypi/simple/demo/"
    ]
    assert page_hits and all(h.authorization == expected for h in page_hits)
    # Liveness probes go without credentials; nothing ever carries the client's token.
    assert all(token not in (h.authorization or "") for h in upstream.hits)


def test_registry_cookies_and_challenges_do_not_reach_the_client(proxied: Standalone):
    reply = page(proxied, "nexus")
    assert reply.header("Set-Cookie") is None
    assert reply.header("WWW-Authenticate") is None

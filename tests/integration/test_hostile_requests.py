"""Requests crafted to steer the proxy elsewhere get a 4xx from the proxy itself, reach no
registry, and leave the proxy serving everyone else."""

from __future__ import annotations

import socket

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.support import wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest

NS = "hostile"


@pytest.fixture(scope="module")
def base(standalone: Standalone, pypi_registry: LocalRegistry) -> str:
    standalone.write(
        NS,
        "c.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("c", pypi_registry.url),
    )
    standalone.wait_ready(NS, "c")
    return standalone.connector_url(NS, "c")


def registry_requests(registry: LocalRegistry) -> int:
    return registry.log_file.read_text().count("\n")


PREFIX = "/namespaces/hostile/connectors/c"
UNSAFE_TARGETS = [
    pytest.param("http://evil.example/simple/", id="absolute-form"),
    pytest.param("evil.example:443", id="authority-form"),
    pytest.param(f"{PREFIX}/simple/../../../etc/passwd", id="dot-dot"),
    pytest.param(f"{PREFIX}/simple/%2e%2e/%2E%2E/x", id="encoded-dot-dot"),
    pytest.param(f"{PREFIX}/simple/..%2f..%2fx", id="encoded-slash"),
    pytest.param(f"{PREFIX}//evil.example/simple/", id="double-slash-host"),
    pytest.param(f"{PREFIX}/simple\\..\\x", id="backslash"),
    pytest.param(f"{PREFIX}/simple/%5c..%5cx", id="encoded-backslash"),
    pytest.param(f"{PREFIX}/simple/%00x", id="encoded-nul"),
]


@pytest.mark.parametrize("target", UNSAFE_TARGETS)
def test_unsafe_request_targets_are_refused_before_any_registry_is_asked(
    standalone: Standalone, pypi_registry: LocalRegistry, base: str, target: str
):
    before = registry_requests(pypi_registry)
    reply = wire.request(
        "GET", standalone.url, target=target, headers=wire.basic(standalone.token(NS, "c"))
    )
    assert 400 <= reply.status < 500, reply
    assert registry_requests(pypi_registry) == before


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "TRACK"])
def test_tunnelling_and_tracing_methods_are_refused(standalone: Standalone, base: str, method: str):
    reply = wire.request(method, base + "/simple/", headers=wire.basic(standalone.token(NS, "c")))
    assert reply.status in (400, 405)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Basic " + "A" * 20000, id="huge"),
        pytest.param("Basic \u00e9\u00e9\u00e9", id="non-ascii"),
        pytest.param("Basic ====", id="bad-base64"),
        pytest.param("Bearer", id="empty-bearer"),
        pytest.param("Bearer a b c", id="spaces"),
    ],
)
def test_malformed_authorization_is_a_client_error(base: str, value: str):
    reply = wire.request(
        "GET", base + "/simple/", headers={"Authorization": value.encode().decode("latin-1")}
    )
    assert reply.status in (400, 401, 431)


def test_garbage_on_the_wire_does_not_disturb_other_clients(standalone: Standalone, base: str):
    host, port = standalone.url.removeprefix("http://").split(":")
    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        b"GET / HTTP/9.9\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"A" * 70000 + b"\r\n\r\n",
    ):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(garbage)
            raw.settimeout(5)
            try:
                answer = raw.recv(100)
            except (ConnectionResetError, TimeoutError):
                answer = b""
            assert answer == b"" or answer[:10] in (b"HTTP/1.0 4", b"HTTP/1.1 4"), answer
    reply = wire.request("GET", base + "/simple/", headers=wire.basic(standalone.token(NS, "c")))
    assert reply.status == 200

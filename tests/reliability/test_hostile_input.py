"""Property-based hostile input against a running proxy: whatever arrives on the wire
(request lines, paths, Host headers, Authorization values, methods, oversized headers),
the proxy answers with a well-formed response and never a server error of its own, never
sends anything to a host other than the connector's, and never dies. "Nowhere else" is
observed, not assumed: a second registry, the canary, is named in the hostile paths and
Host headers, and must never be asked anything."""

from __future__ import annotations

import base64
import re
import socket
import string
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import faulty
from tests.support.faulty import FaultyRegistry
from tests.support.standalone import Standalone, connector_manifest, secret_manifest

SEGMENTS = st.sampled_from([
    "simple", "packages", "..", ".", "%2e%2e", "%2f", "%5c", "%00", "", "\\", "_ext", "files",
    "_origin", "evil.example.net", "http:", "ok.whl", "%252e", "é", "\t", "a" * 300,
    "namespaces", "default", "connectors", "guarded",
])  # fmt: skip
PATHS = st.one_of(
    st.lists(SEGMENTS, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["http://evil.example.net/simple/", "//evil.example.net/", "*",
                     "evil.example.net:443", "/namespaces/default/connectors/guarded/../x"]),
    st.text(alphabet=string.printable, max_size=60).map(lambda t: "/" + t),
)  # fmt: skip
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT",
                           "TRACE", "PATCH", "PROPFIND", "G\x00T", "get"])  # fmt: skip
HOSTS = st.one_of(
    st.sampled_from(["c-guarded.default", "c-guarded.default.svc.cluster.local:80",
                     "evil.example.net", "c-guarded.default@evil.example.net", "", "[::1]",
                     "c-ghost.nowhere", "127.0.0.1:1"]),
    st.text(alphabet=string.ascii_letters + string.digits + ".-:@[]", max_size=40),
)  # fmt: skip


def authorizations(token: str) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.just("Basic " + base64.b64encode(f"x:{token}".encode()).decode()),
        st.just(f"Bearer {token}"),
        st.binary(max_size=64).map(lambda b: "Basic " + base64.b64encode(b).decode()),
        st.sampled_from(["Basic !!!", "Basic", "Bearer", "Negotiate abc", "Basic " + "A" * 20000,
                         "Bearer é", "Basic w6k=", "bearer " + token[:-3]]),
    )  # fmt: skip


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Standalone, FaultyRegistry, str]]:
    with faulty.faulty_registry() as registry:
        server = Standalone(tmp_path_factory.mktemp("hostile"))
        server.write(
            "default", "c.yaml",
            secret_manifest("guarded-secret", faulty.USERNAME, faulty.PASSWORD),
            connector_manifest("guarded", registry.url, secret="guarded-secret",
                               extensions={"files": registry.url + "/files"}),
        )  # fmt: skip
        server.start("--upstream-timeout", "2")
        try:
            server.wait_ready("default", "guarded")
            yield server, registry, server.token("default", "guarded")
        finally:
            server.stop()


def exchange(url: str, raw: bytes) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(raw)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
                if len(answer) > 4096:
                    break
        except TimeoutError:
            pass
    return answer


@pytest.fixture(scope="module")
def canary() -> Iterator[FaultyRegistry]:
    """A registry no connector names: any request reaching it went somewhere else."""
    with faulty.faulty_registry() as registry:
        yield registry


def toward(canary: FaultyRegistry) -> st.SearchStrategy[tuple[str, str]]:
    """A path and a Host header, one or both naming the canary, as an attacker would try."""
    where = canary.url.removeprefix("http://")
    paths = st.sampled_from([
        f"http://{where}/simple/", f"//{where}/simple/", f"/_ext/{where}/simple/",
        f"/_origin/{where}/simple/", f"/{where}/simple/", f"/..//{where}/simple/",
    ])  # fmt: skip
    hosts = st.one_of(
        HOSTS,
        st.sampled_from([where, f"c-guarded.default@{where}", f"{where}#c-guarded.default"]),
    )
    return st.tuples(paths, hosts)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hostile_requests_get_client_errors_and_go_nowhere_else(
    guarded: tuple[Standalone, FaultyRegistry, str], canary: FaultyRegistry, data: st.DataObject
):
    server, registry, token = guarded
    method = data.draw(METHODS)
    path = data.draw(PATHS)
    host = data.draw(HOSTS)
    authorization = data.draw(authorizations(token))
    routed = data.draw(st.booleans())
    if data.draw(st.booleans()):
        # Aimed at the canary the way a client of the connector would try it: through the
        # connector's path, with a token the proxy accepts.
        path, host = data.draw(toward(canary))
        method, routed, authorization = "GET", True, "Bearer " + token
    if routed and path.startswith("/"):
        path = "/namespaces/default/connectors/guarded" + path
    headers = [f"Host: {host}"]
    if authorization is not None:
        headers.append(f"Authorization: {authorization}")
    if data.draw(st.booleans()):
        headers.append("X-Padding: " + "p" * data.draw(st.integers(0, 40000)))
    raw = (f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers)
           + "\r\nConnection: close\r\n\r\n").encode("utf-8", "surrogateescape")  # fmt: skip
    answer = exchange(server.url, raw)
    assert re.match(rb"HTTP/1\.[01] \d{3} ", answer), answer[:100]  # a parser error is 1.0
    status = int(answer[9:12])
    assert status < 500 or b"registry" in answer, answer[:300]  # only the registry's own 5xx
    assert faulty.PASSWORD.encode() not in answer
    for seen in registry.seen:
        assert seen.host == registry.url.removeprefix("http://")
        assert ".." not in seen.path and "//" not in seen.path
    assert canary.seen == []


def test_the_proxy_is_still_healthy_afterwards(guarded: tuple[Standalone, FaultyRegistry, str]):
    server, _, _ = guarded
    assert server.process is not None and server.process.poll() is None
    answer = exchange(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")

"""What any client that reaches the proxy's port may cost before anyone knows who it is:
idle and half-sent connections are closed, idle connections cannot lock real clients out
under the file-descriptor limit, malformed request heads get the status that says why
without an echo, and a client is told to send its body only once its token is accepted."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support import hostile, wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest

IDLE_TIMEOUT = 1.0
OPEN_FILES = 256  # the server's RLIMIT_NOFILE: its connection budget is (256 - 128) / 2
SENTINEL = "sentinel-token-3c1d9a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with hostile.hostile_registry() as registry:
        server = Standalone(tmp_path_factory.mktemp("connections"))
        server.write(
            "default", "c.yaml",
            secret_manifest("registry-secret", hostile.USERNAME, hostile.PASSWORD),
            connector_manifest("mirror", registry.url),
        )  # fmt: skip
        server.start("--client-idle-timeout", str(IDLE_TIMEOUT), open_files=OPEN_FILES)
        try:
            server.wait_ready("default", "mirror")
            yield server
        finally:
            server.stop()
        assert SENTINEL not in server.log_file.read_text(errors="replace")


def connect(server: Standalone) -> socket.socket:
    parts = urlsplit(server.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes `sock` (or answers and closes) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def first_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def index(server: Standalone) -> wire.Reply:
    token = server.token("default", "mirror")
    return wire.request(
        "GET", server.connector_url("default", "mirror") + "/simple/", headers=wire.basic(token)
    )


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(server: Standalone):
    with connect(server) as silent:
        assert closed_within(silent, IDLE_TIMEOUT * 3)


def test_a_connection_that_never_finishes_its_headers_is_closed(server: Standalone):
    with connect(server) as dribbling:
        dribbling.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n")
        time.sleep(IDLE_TIMEOUT / 2)
        dribbling.sendall(b"X-Slow: 1\r\n")
        assert closed_within(dribbling, IDLE_TIMEOUT * 3)


def test_idle_connections_cannot_lock_real_clients_out(server: Standalone):
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(connect(server)) for _ in range(OPEN_FILES + 50)]
        reply = index(server)
        assert reply.status == 200
        evicted = sum(closed_within(s, 0.01) for s in idle)
        assert evicted >= 50  # the oldest idle ones made room


def test_an_oversized_header_is_a_431_that_echoes_nothing(server: Standalone):
    reply = wire.request(
        "GET",
        server.connector_url("default", "mirror") + "/simple/",
        headers={"Authorization": "Bearer " + SENTINEL + "x" * 20_000},
    )
    assert reply.status == 431
    assert SENTINEL.encode() not in reply.body


def test_an_oversized_request_line_is_a_414(server: Standalone):
    path = "/simple/" + "a" * 9000
    reply = wire.request("GET", server.connector_url("default", "mirror") + path)
    assert reply.status == 414


def test_an_http_0_9_request_is_never_served(server: Standalone):
    with connect(server) as sock:
        sock.sendall(b"GET /namespaces/default/connectors/mirror/simple/\r\n")
        answer = first_line(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer


@pytest.mark.parametrize(("token_ok", "first"), [(False, b"HTTP/1.1 401"), (True, b"HTTP/1.1 100")])
def test_100_continue_comes_only_after_the_token_is_accepted(
    server: Standalone, token_ok: bool, first: bytes
):
    token = server.token("default", "mirror") if token_ok else "not-a-token"
    head = (
        "POST /namespaces/default/connectors/mirror/ HTTP/1.1\r\n"
        "Host: localhost\r\n"
        f"Authorization: {wire.basic(token)['Authorization']}\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head.encode())
        answer = first_line(sock)
        assert answer.startswith(first), answer

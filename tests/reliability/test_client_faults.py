"""Clients that misbehave: one that vanishes mid-upload leaves nothing in the registry;
slow senders and slow readers do not hold up anyone else."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.support import wire
from tests.support.standalone import Standalone, serving
from tests.support.waiting import settled
from tests.support.wheels import make_wheel

BOUNDARY = "connectors-test-boundary"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Standalone, LocalRegistry]]:
    workdir = tmp_path_factory.mktemp("client-faults")
    with (
        localregistry.pypiserver(workdir / "registry", hash_scheme="apr_md5_crypt") as registry,
        serving(workdir / "server", registry.url, registry.username, registry.password) as server,
    ):
        yield server, registry


def upload_body(wheel: Path) -> bytes:
    """The legacy upload form twine sends, with one distribution."""
    name, version = wheel.name.split("-")[:2]
    fields = {":action": "file_upload", "protocol_version": "1", "name": name,
              "version": version, "filetype": "bdist_wheel", "pyversion": "py3",
              "metadata_version": "2.1"}  # fmt: skip
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + wheel.read_bytes()
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def raw_upload(server: Standalone, body: bytes, *, send: int) -> bytes:
    """Send the upload's headers and the first `send` bytes of its body; return whatever
    the proxy answered (nothing if we hang up first)."""
    url = urlsplit(server.connector_url("default", "mirror") + "/")
    token = server.token("default", "mirror")
    auth = wire.basic(token)["Authorization"]
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: {auth}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(head + body[:send])
        if send < len(body):
            time.sleep(0.5)
            return b""  # hang up mid-body
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def test_a_client_that_hangs_up_mid_upload_leaves_no_file(
    setup: tuple[Standalone, LocalRegistry], tmp_path: Path
):
    server, registry = setup
    wheel = make_wheel(tmp_path, "half-sent", "1.0.0", payload=b"\x01" * 3_000_000)
    body = upload_body(wheel)
    logged = len(server.audit_lines())
    raw_upload(server, body, send=len(body) // 2)
    # The proxy has finished with the request once it logs it (as the client's hang-up).
    settled(
        lambda: any(x["method"] == "POST" for x in server.audit_lines()[logged:]),
        30,
        "the broken upload's audit line",
    )
    assert not any(p.name.startswith("half_sent") for p in registry.packages.iterdir())
    # The same upload sent whole is accepted, so the request above was a real upload.
    answer = raw_upload(server, body, send=len(body))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert (registry.packages / wheel.name).read_bytes() == wheel.read_bytes()


def test_slow_senders_and_slow_readers_do_not_hold_up_other_clients(
    setup: tuple[Standalone, LocalRegistry], tmp_path: Path
):
    server, registry = setup
    make_wheel(registry.packages, "big-one", "1.0.0", payload=b"\x02" * 20_000_000)
    url = urlsplit(server.connector_url("default", "mirror"))
    token = server.token("default", "mirror")

    def index_pages() -> float:
        started = time.monotonic()
        for _ in range(10):
            reply = wire.request("GET", server.connector_url("default", "mirror") + "/simple/",
                                 headers=wire.basic(token))  # fmt: skip
            assert reply.status == 200
        return time.monotonic() - started

    unloaded = index_pages()
    stop = threading.Event()
    sockets: list[socket.socket] = []
    reading: list[socket.socket] = []

    def slow_sender() -> None:  # sends its request line a byte every 100 ms
        conn = socket.create_connection((url.hostname, url.port), timeout=30)
        sockets.append(conn)
        line = f"GET {url.path}/simple/ HTTP/1.1\r\nHost: {url.netloc}\r\n".encode()
        for byte in line:
            if stop.is_set():
                return
            conn.send(bytes([byte]))
            time.sleep(0.1)

    def slow_reader() -> None:  # asks for 20 MB and reads 1 KiB every 100 ms
        conn = socket.create_connection((url.hostname, url.port), timeout=30)
        sockets.append(conn)
        auth = wire.basic(token)["Authorization"]
        conn.sendall(f"GET {url.path}/packages/big_one-1.0.0-py3-none-any.whl HTTP/1.1\r\n"
                     f"Host: {url.netloc}\r\nAuthorization: {auth}\r\n\r\n".encode())  # fmt: skip
        if conn.recv(1024):
            reading.append(conn)  # the proxy is streaming the file to it
        while not stop.is_set() and conn.recv(1024):
            time.sleep(0.1)

    threads = [threading.Thread(target=slow_sender) for _ in range(30)]
    threads += [threading.Thread(target=slow_reader) for _ in range(10)]
    for thread in threads:
        thread.start()
    try:
        settled(
            lambda: len(sockets) == len(threads) and len(reading) == 10,
            20,
            "every slow client connected, and every slow reader being sent its file",
        )
        loaded = index_pages()
    finally:
        stop.set()
        for conn in sockets:
            conn.close()
        for thread in threads:
            thread.join()
    assert loaded < unloaded * 2 + 1, (unloaded, loaded)

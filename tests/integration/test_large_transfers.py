"""Files larger than 200 MiB go through the proxy both ways, byte for byte, while the
proxy process stays under 150 MiB of resident memory: bodies stream, nothing is held."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.support import wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest

NS = "large"
SIZE = 210 * 1024 * 1024
RSS_LIMIT = 150 * 1024 * 1024

pytestmark = pytest.mark.slow


class PeakRss:
    """Samples a process's resident memory every few milliseconds while in use."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 4 << 20))
            digest.update(block)
            handle.write(block)
            remaining -= len(block)
    return digest.hexdigest()


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


def test_a_210_mib_download_streams_through_in_bounded_memory(
    standalone: Standalone, pypi_registry: LocalRegistry, base: str
):
    expected = write_random(pypi_registry.packages / "big-1.0.tar.gz", SIZE)
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    digest = hashlib.sha256()
    received = 0
    with PeakRss(standalone.pid) as rss:
        connection.request(
            "GET",
            parts.path + "/packages/big-1.0.tar.gz",
            headers=wire.basic(standalone.token(NS, "c")),
        )
        response = connection.getresponse()
        assert response.status == 200
        while block := response.read(1 << 20):
            digest.update(block)
            received += len(block)
    connection.close()
    assert received == SIZE
    assert digest.hexdigest() == expected
    assert rss.peak < RSS_LIMIT, f"proxy peaked at {rss.peak / 2**20:.0f} MiB"


def multipart_upload(path: Path, filename: str) -> tuple[str, Iterator[bytes], int]:
    boundary = uuid.uuid4().hex
    fields = {
        ":action": "file_upload",
        "name": "big",
        "version": "2.0",
        "protocol_version": "1",
        "filetype": "sdist",
        "pyversion": "source",
    }
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                yield block
        yield tail

    length = len(head) + path.stat().st_size + len(tail)
    return f"multipart/form-data; boundary={boundary}", body(), length


def test_a_210_mib_upload_streams_through_in_bounded_memory(
    standalone: Standalone, pypi_registry: LocalRegistry, base: str, tmp_path: Path
):
    source = tmp_path / "big-2.0.tar.gz"
    expected = write_random(source, SIZE)
    content_type, body, length = multipart_upload(source, source.name)
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
    with PeakRss(standalone.pid) as rss:
        connection.request(
            "POST",
            parts.path + "/",
            body=body,
            headers={
                **wire.basic(standalone.token(NS, "c")),
                "Content-Type": content_type,
                "Content-Length": str(length),
            },
        )
        response = connection.getresponse()
        response.read()
    connection.close()
    assert response.status == 200, response.reason
    stored = pypi_registry.packages / source.name
    digest = hashlib.sha256()
    with stored.open("rb") as handle:
        while block := handle.read(4 << 20):
            digest.update(block)
    assert digest.hexdigest() == expected
    assert rss.peak < RSS_LIMIT, f"proxy peaked at {rss.peak / 2**20:.0f} MiB"

"""A real devpi-server with a user, a password and a private index that only that user may
upload to. Its simple index lives under /<user>/<index>/+simple/, which is why connectors
has the simplePath parameter."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from connectors.standalone.localregistry import LocalRegistry, free_port, wait_for_http


def _call(method: str, url: str, body: dict[str, object], auth: tuple[str, str] | None) -> None:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    if auth is not None:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30):
        pass


@contextlib.contextmanager
def devpi_server(workdir: Path, *, username: str = "alice") -> Iterator[LocalRegistry]:
    """devpi-server on loopback; the registry's url is the index address /alice/dev."""
    password = secrets.token_urlsafe(18)
    serverdir = workdir / "devpi"
    bindir = Path(sys.executable).parent
    subprocess.run(
        [str(bindir / "devpi-init"), "--serverdir", str(serverdir)], check=True, capture_output=True
    )
    port = free_port()
    log_file = workdir / "devpi.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                str(bindir / "devpi-server"),
                "--serverdir",
                str(serverdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--offline-mode",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        root = f"http://127.0.0.1:{port}"
        wait_for_http(root + "/+api", timeout_seconds=60, process=process)
        _call("PUT", f"{root}/{username}", {"password": password}, None)
        _call(
            "PUT",
            f"{root}/{username}/dev",
            {"type": "stage", "bases": [], "acl_upload": [username], "volatile": True},
            (username, password),
        )
        yield LocalRegistry(
            url=f"{root}/{username}/dev",
            username=username,
            password=password,
            packages=serverdir,
            log_file=log_file,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

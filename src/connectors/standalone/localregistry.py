"""A real, password-protected PyPI registry on loopback: pypiserver with an htpasswd file.

`connectors demo` tells its story against this registry, and the tests use the same
launcher, so what the demo shows is what the tests prove. pypiserver and passlib come
with the `demo` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from connectors.api.errors import StateError


@dataclasses.dataclass(frozen=True)
class LocalRegistry:
    url: str
    username: str
    password: str = dataclasses.field(repr=False)
    packages: Path = Path()
    log_file: Path = Path()

    def __repr__(self) -> str:
        return f"LocalRegistry(url={self.url!r}, username={self.username!r}, password=<hidden>)"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for servers that cannot bind port 0 and say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def write_htpasswd(path: Path, username: str, password: str, scheme: str = "sha256_crypt") -> None:
    try:
        from passlib.apache import HtpasswdFile
    except ImportError as exc:
        raise StateError(
            "pypiserver's password support needs passlib: install connectors with the `demo` extra"
        ) from exc
    htpasswd = HtpasswdFile(str(path), new=True, default_scheme=scheme)
    htpasswd.set_password(username, password)
    htpasswd.save()


def wait_for_http(url: str, *, timeout_seconds: float, process: subprocess.Popen[bytes]) -> None:
    """Return once `url` answers at all; fail early if the process died."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StateError(f"the registry process exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback only)
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise StateError(f"the registry at {url} did not start within {timeout_seconds:g}s")


@contextlib.contextmanager
def pypiserver(
    workdir: Path,
    *,
    username: str = "registry-user",
    password: str | None = None,
    port: int | None = None,
    hash_scheme: str = "sha256_crypt",
    host: str = "127.0.0.1",
    authenticate: str = "update,download,list",
    fallback: str | None = None,
) -> Iterator[LocalRegistry]:
    """Run pypiserver on a port of `host` (a free one unless given), authenticating the
    actions in `authenticate` (all three by default; "update" leaves reading anonymous).
    `fallback`, a URL, keeps pypiserver's default of redirecting names it lacks to another
    index (its own default is PyPI).
    `hash_scheme` is the htpasswd scheme: sha256_crypt costs the registry about 0.3 s per
    authenticated request here; apr_md5_crypt about 1 ms."""
    password = password or secrets.token_urlsafe(18)
    packages = workdir / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "htpasswd"
    write_htpasswd(htpasswd, username, password, hash_scheme)
    port = port or free_port(host)
    log_file = workdir / "pypiserver.log"
    command = [
        sys.executable,
        "-m",
        "pypiserver",
        "run",
        "--host",
        host,
        "--port",
        str(port),
        "--passwords",
        str(htpasswd),
        "--authenticate",
        authenticate,
        *(["--fallback-url", fallback] if fallback else ["--disable-fallback"]),
        "--hash-algo",
        "sha256",
        "--server",
        "auto",
        str(packages),
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://{host}:{port}"
        wait_for_http(url + "/health", timeout_seconds=30, process=process)
        yield LocalRegistry(
            url=url, username=username, password=password, packages=packages, log_file=log_file
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""The processes a speed benchmark compares, each started on loopback and stopped after.

- `nginx_upstream`: nginx serving static files behind basic auth, so the registry is never
  the bottleneck of a throughput run;
- `nginx_front`: nginx as a reverse proxy that injects the same credentials, tuned fairly
  (keep-alive to the upstream, large buffers, no temporary files; config in
  bench/nginx-front.conf);
- `connectors_serve`: `connectors serve` with one Connector to the same upstream.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from connectors.standalone.localregistry import free_port, write_htpasswd
from connectors.standalone.server import DEFAULT_RECONCILE_INTERVAL_SECONDS
from tests.support.standalone import Standalone, serving

HERE = Path(__file__).parent
USER, PASSWORD = "bench-user", "bench-password-4c1a"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _wait(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def _nginx(workdir: Path, config: str) -> Iterator[None]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "stderr.log").open("wb"),
    )  # fmt: skip
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def _common(workdir: Path) -> str:
    # As root, nginx's workers would switch to an unprivileged user that cannot read the
    # benchmark's private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return user + (
        f"worker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 4096; }\n"
    )


@contextlib.contextmanager
def nginx_upstream(workdir: Path, root: Path) -> Iterator[str]:
    """Static files under `root`, basic auth required; yields its URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    write_htpasswd(workdir / "htpasswd", USER, PASSWORD, "apr_md5_crypt")
    config = (
        _common(workdir)
        + f"""http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  types {{ text/html html; application/octet-stream whl bin; }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    auth_basic "bench"; auth_basic_user_file {workdir}/htpasswd;
    location / {{ index index.html; }}
  }}
}}
"""
    )
    with _nginx(workdir, config):
        url = f"http://127.0.0.1:{port}"
        _wait(url + "/")
        yield url


@contextlib.contextmanager
def nginx_front(workdir: Path, upstream: str, user: str, password: str) -> Iterator[str]:
    """The tuned reverse proxy of bench/nginx-front.conf in front of `upstream`."""
    with _credentialed_nginx(
        workdir, "nginx-front.conf", free_port(), upstream=upstream, credentials=(user, password)
    ) as url:
        yield url


@contextlib.contextmanager
def _credentialed_nginx(
    workdir: Path, conf: str, port: int, *, upstream: str, credentials: tuple[str, str]
) -> Iterator[str]:
    """nginx from a template of bench/ that injects the registry's credentials; the
    template may also name `{cache}`, a directory under `workdir`."""
    template = (HERE / conf).read_text()
    config = _common(workdir) + template.format(
        port=port, upstream=upstream.removeprefix("http://"), cache=workdir / "cache",
        authorization=basic(*credentials),
    )  # fmt: skip
    with _nginx(workdir, config):
        url = f"http://127.0.0.1:{port}"
        _wait(url + "/")
        yield url


@contextlib.contextmanager
def connectors_serve(
    workdir: Path, upstream: str, user: str, password: str
) -> Iterator[Standalone]:
    # The product's own reconcile interval, not the 1 s the tests use to see changes fast:
    # each pass probes the registry, which would be measured as proxy overhead.
    interval = str(DEFAULT_RECONCILE_INTERVAL_SECONDS)
    with serving(
        workdir, upstream, user, password, "--reconcile-interval", interval, name="bench"
    ) as server:
        yield server


@contextlib.contextmanager
def nginx_cache(workdir: Path, upstream: str, user: str, password: str) -> Iterator[str]:
    """nginx as a credential-injecting proxy that caches files (bench/nginx-cache.conf),
    on the port it had before if `workdir` held one (so a restarted peer keeps its URL)."""
    port_file = workdir.parent / "nginx-cache.port"
    port = int(port_file.read_text()) if port_file.exists() else free_port()
    port_file.write_text(str(port))
    with _credentialed_nginx(
        workdir, "nginx-cache.conf", port, upstream=upstream, credentials=(user, password)
    ) as url:
        yield url


@dataclasses.dataclass
class DevpiMirrors:
    url: str
    user: str
    password: str
    made: int = 0

    def new_mirror(self, mirror_url: str) -> str:
        """A new, empty mirror index of `mirror_url`; returns its name (user/index)."""
        self.made += 1
        name = f"{self.user}/mirror{self.made}"
        _devpi_call("PUT", f"{self.url}/{name}", {"type": "mirror", "mirror_url": mirror_url},
                    (self.user, self.password))  # fmt: skip
        return name


def _devpi_call(
    method: str, url: str, body: dict[str, object], auth: tuple[str, str] | None
) -> None:
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )  # fmt: skip
    if auth is not None:
        request.add_header("Authorization", basic(*auth))
    with urllib.request.urlopen(request, timeout=30):
        pass


@contextlib.contextmanager
def devpi_mirror_server(workdir: Path) -> Iterator[DevpiMirrors]:
    """devpi-server (online: it fetches what its mirrors lack), with a user who makes
    mirror indexes."""
    serverdir = workdir / "server"
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "devpi-init"), "--serverdir", str(serverdir)],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "devpi.log").open("wb") as log:
        process = subprocess.Popen(
            [str(bindir / "devpi-server"), "--serverdir", str(serverdir),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url + "/+api", timeout=60)
        mirrors = DevpiMirrors(url, "bench", "bench-devpi-password")
        _devpi_call("PUT", f"{url}/bench", {"password": mirrors.password}, None)
        yield mirrors
    finally:
        process.terminate()
        process.wait(timeout=15)

"""A real nginx that writes down every request it answers: how tests see what the proxy
asked of a registry (pypiserver keeps no access log).

`watched` puts it in front of a registry: it forwards everything as it comes (the proxy's
credentials included) and keeps no cache. Paths containing `slow` are sent at `slow_rate`
bytes per second, so that a test can act while a download is under way.
`static_registry` makes it the registry: a PEP 503 tree of files served anonymously, with
the `ETag` and `Last-Modified` that pypiserver and devpi do not send on index pages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from connectors.reconcile import probes
from connectors.standalone.localregistry import free_port
from tests.support.waiting import answers, started

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclasses.dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: int
    user_agent: str


@dataclasses.dataclass(frozen=True)
class Watched:
    url: str
    access_log: Path

    def requests(self) -> list[Logged]:
        """What nginx has logged, once its log has stopped growing: nginx writes a line
        after its answer is sent, which can be after the proxy has passed that answer on."""
        if not self.access_log.exists():
            return []
        size, deadline = -1, time.monotonic() + 2
        while size != self.access_log.stat().st_size and time.monotonic() < deadline:
            size = self.access_log.stat().st_size
            time.sleep(0.05)
        lines = self.access_log.read_text().splitlines()
        return [Logged(m, p, int(s), a) for m, p, s, a in (line.split(" ", 3) for line in lines)]

    def count(self, method: str, path_suffix: str) -> int:
        """Requests the clients caused: the reconciler's own probes (it reads index pages
        every pass) are left out."""
        return sum(
            1
            for r in self.requests()
            if r.method == method
            and r.path.endswith(path_suffix)
            and r.user_agent != probes.USER_AGENT
        )


@contextlib.contextmanager
def watched(upstream: str, workdir: Path, *, slow_rate: int = 256 * 1024) -> Iterator[Watched]:
    target = upstream.removeprefix("http://").rstrip("/")
    locations = f"""
    location / {{
      proxy_pass http://{target};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
    }}
    location ~ slow {{
      proxy_pass http://{target};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      limit_rate {slow_rate};
    }}
"""
    with _nginx(workdir, locations) as running:
        yield running


@contextlib.contextmanager
def static_registry(root: Path, workdir: Path) -> Iterator[Watched]:
    locations = f"""
    root {root};
    types {{ text/html html; }}
    default_type application/octet-stream;
    location / {{ index index.html; }}
"""
    with _nginx(workdir, locations) as running:
        yield running


@contextlib.contextmanager
def _nginx(workdir: Path, locations: str) -> Iterator[Watched]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (workdir / "nginx.conf").write_text(
        user
        + f"""worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 256; }}
http {{
  log_format plain '$request_method $uri $status $http_user_agent';
  access_log {workdir}/access.log plain;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
{locations}
  }}
}}
"""
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "stderr.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        started(process, lambda: answers(url + "/health"), 20, f"nginx at {url}")
        yield Watched(url=url, access_log=workdir / "access.log")
    finally:
        process.terminate()
        process.wait(timeout=10)

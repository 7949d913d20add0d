"""A tenant's registry built to hurt the shared proxy, for isolation tests and the soak
benchmark: no real registry can be told to send a compression bomb or stall on purpose.

It requires the connector's password like a private registry, serves everything below
the connector's address `/repo`, and one behaviour per project under `/repo/simple/`:

    bomb/          a gzip body of 256 KiB that decodes to 256 MiB
    huge/          a valid 48 MiB HTML page of 400,000 links (under the proxy's bound)
    oversized/     an 80 MiB page (over the proxy's 64 MiB bound)
    bad-gzip/      Content-Encoding gzip over bytes that are not gzip
    bad-link/      a page whose link no URL parser accepts
    unterminated/  a PEP 691 page whose JSON string never ends
    nested/        a PEP 691 page nested 200,000 deep, with one file link inside
    stall/         no answer for a minute
    headers/       a small page with response headers a client must never see
    outside/       a page linking to /files/secret.whl, outside the address, on the host

Outside the address: `/files/secret.whl` (what the page links to) and `/echo`, which
answers with every request header it got, the Authorization included (as a registry with a
debugging endpoint might): the proxy must never let a token reach it. Every request's
path and headers are recorded, and read back from `/__seen`.

It runs as a process of its own (`python -m tests.support.hostile HOST PORT`), so that
serving its huge bodies never competes with the test's own threads for the interpreter.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp.typedefs import Handler

from connectors.standalone.localregistry import free_port
from tests.support.waiting import answers, started

USERNAME = "tenant-c"
PASSWORD = "hostile-registry-password-9f3e"
MIB = 1024 * 1024
STALL_SECONDS = 60.0
SECRET_WHEEL = b"only-for-the-connector" * 100


@dataclasses.dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]


@dataclasses.dataclass
class HostileRegistry:
    url: str  # the connector's address: <origin>/repo
    origin: str

    def seen(self) -> list[Seen]:
        with urllib.request.urlopen(self.origin + "/__seen", timeout=10) as reply:
            return [Seen(path, headers) for path, headers in json.load(reply)]


def _bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MIB)
    return b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()


def _page(links: int, pad: int = 0) -> bytes:
    row = '<a href="../../packages/p-{0}.whl#sha256={0:064d}">p-{0}.whl</a>{1}\n'
    return ("<html><body>\n" + "".join(row.format(i, " " * pad) for i in range(links))).encode()


def _nested(depth: int) -> bytes:
    inner = b'{"files":[{"filename":"n-1.whl","url":"../../packages/n-1.whl"}]}'
    return b'{"a":' * depth + inner + b"}" * depth


BODIES: dict[str, tuple[bytes, dict[str, str]]] = {}


def _bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    if not BODIES:
        html = {"Content-Type": "text/html"}
        pep691 = {"Content-Type": "application/vnd.pypi.simple.v1+json"}
        BODIES.update(
            {
                "bomb": (_bomb(), {**html, "Content-Encoding": "gzip"}),
                "huge": (_page(400_000), html),
                "oversized": (_page(400_000, pad=80), html),
                "bad-gzip": (
                    b"\x1f\x8b\x08\x00 this is not gzip" * 100,
                    {**html, "Content-Encoding": "gzip"},
                ),
                "bad-link": (b'<a href="http://[::1/p-1.whl">p-1.whl</a>\n', html),
                "unterminated": (b'{"files":[{"url":"../../packages/u-1.whl', pep691),
                "nested": (_nested(200_000), pep691),
                "headers": (
                    b'<a href="../../packages/h-1.whl">h-1.whl</a>\n',
                    {
                        **html,
                        "ETag": '"page-1"',
                        "Set-Cookie": "session=registry-session",
                        "Set-Cookie2": "session2=registry-session",
                        "Authentication-Info": 'nextnonce="registry"',
                        "X-Powered-By": "hostile",
                        "Proxy-Authenticate": 'Basic realm="x"',
                    },
                ),
                "outside": (b'<a href="/files/secret.whl">secret.whl</a>\n', html),
            }
        )
        assert len(BODIES["oversized"][0]) > 64 * MIB > len(BODIES["huge"][0])
    return BODIES


def _authorized(request: web.Request) -> bool:
    expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    return request.headers.get("Authorization") == expected


async def _simple(request: web.Request) -> web.StreamResponse:
    project = request.match_info["project"]
    if project == "stall":
        await asyncio.sleep(STALL_SECONDS)
    body, headers = _bodies().get(project, (b"<html></html>\n", {"Content-Type": "text/html"}))
    return web.Response(body=body, headers=headers)


async def _root(request: web.Request) -> web.Response:
    return web.Response(text="<html><body></body></html>\n", content_type="text/html")


async def _package(request: web.Request) -> web.Response:
    return web.Response(body=b"wheel:" + request.match_info["name"].encode())


async def _secret_file(request: web.Request) -> web.Response:
    return web.Response(body=SECRET_WHEEL, content_type="application/octet-stream")


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(dict(request.headers)), content_type="text/plain")


SEEN = web.AppKey("seen", list)


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/__seen":
        return web.json_response(request.app[SEEN])
    request.app[SEEN].append((request.path, dict(request.headers)))
    if request.path != "/echo" and not _authorized(request):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="hostile"'})
    return await handler(request)


def serve(host: str, port: int) -> None:
    _bodies()
    app = web.Application(middlewares=[_record], client_max_size=MIB)
    app[SEEN] = []
    app.router.add_get("/repo/simple/", _root)
    app.router.add_get("/repo/simple/{project}/", _simple)
    app.router.add_get("/repo/packages/{name}", _package)
    app.router.add_get("/files/secret.whl", _secret_file)
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/__seen", _root)  # answered by _record
    web.run_app(
        app, host=host, port=port, print=None, shutdown_timeout=1, handler_cancellation=True
    )


@contextmanager
def hostile_registry(host: str = "127.0.0.1") -> Iterator[HostileRegistry]:
    """One hostile registry on `host` (any loopback address), in a process of its own."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hostile", host, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    origin = f"http://{host}:{port}"
    try:
        started(process, lambda: answers(origin + "/__seen"), 30, "the hostile registry")
        yield HostileRegistry(url=origin + "/repo", origin=origin)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))

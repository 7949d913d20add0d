"""A registry that misbehaves on request, for fault tests: no real registry can be told to
stall, cut a body short or reset a connection at a chosen moment.

It serves a PEP 503 index like pypiserver's (password required) and, under /files/, one
behaviour per file name:

    ok.whl            the whole body (1 MiB)
    truncated.whl     Content-Length of 1 MiB, then the connection closes after 256 KiB
    small-cut.whl     Content-Length of 64 KiB, then the connection closes after 16 KiB
    chunked-cut.whl   a chunked body whose connection closes before the last chunk
    reset.whl         the connection is dropped before any answer
    stall.whl         no answer at all for a minute
    stall-body.whl    headers and 256 KiB, then silence for a minute
    error.whl         503 with a body of its own
    big.whl           16 MiB, whole (large enough for the proxy's in-kernel relay)
    big-cut.whl       Content-Length of 16 MiB, then the connection closes after 4 MiB

It runs on loopback in a thread of its own and records every request it receives (method,
Host, path, whether an Authorization came with it).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp.typedefs import Handler

from connectors.standalone.localregistry import free_port

USERNAME = "faulty-user"
PASSWORD = "faulty-password-7b1f"
MIB = 1024 * 1024
BODY = bytes(range(256)) * (MIB // 256)
BIG = BODY * 16
SMALL = 64 * 1024  # small enough for the proxy to read whole before answering
FILES = (
    "ok",
    "truncated",
    "chunked-cut",
    "reset",
    "stall",
    "stall-body",
    "error",
    "big",
    "big-cut",
)


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    host: str
    path: str
    authorized: bool


@dataclasses.dataclass
class FaultyRegistry:
    url: str
    seen: list[Seen]


def _authorized(request: web.Request) -> bool:
    expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    return request.headers.get("Authorization") == expected


async def _index(request: web.Request) -> web.Response:
    links = "".join(
        f'<a href="../../files/{name}.whl#sha256=00">{name}.whl</a>\n' for name in FILES
    )
    return web.Response(text=f"<html><body>\n{links}</body></html>\n", content_type="text/html")


async def _file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "ok.whl":
        return web.Response(body=BODY, content_type="application/octet-stream")
    if name == "big.whl":
        return web.Response(body=BIG, content_type="application/octet-stream")
    if name == "error.whl":
        return web.Response(status=503, text="registry overloaded, try later\n")
    if name == "reset.whl":
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response()
    if name == "stall.whl":
        await asyncio.sleep(60)
        return web.Response(text="too late\n")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if name in ("truncated.whl", "stall-body.whl"):
        response.content_length = len(BODY)
    elif name == "small-cut.whl":
        response.content_length = SMALL
    elif name == "big-cut.whl":
        response.content_length = len(BIG)
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    sent = {"big-cut.whl": BIG[: 4 * MIB], "small-cut.whl": BODY[: SMALL // 4]}
    await response.write(sent.get(name, BODY[: MIB // 4]))
    if name == "stall-body.whl":
        await asyncio.sleep(60)
    assert request.transport is not None
    request.transport.abort()
    return response


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    seen: list[Seen] = request.app[SEEN]
    seen.append(
        Seen(request.method, request.host, request.path, "Authorization" in request.headers)
    )
    if not _authorized(request):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="faulty"'})
    return await handler(request)


SEEN = web.AppKey("seen", list)


@contextmanager
def faulty_registry() -> Iterator[FaultyRegistry]:
    port = free_port()
    seen: list[Seen] = []
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application(middlewares=[_record])
        app[SEEN] = seen
        app.router.add_get("/simple/", _index)
        app.router.add_get("/simple/{project}/", _index)
        app.router.add_route("*", "/files/{name}", _file)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box.append(runner)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    started.wait(10)
    try:
        yield FaultyRegistry(url=f"http://127.0.0.1:{port}", seen=seen)
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

"""Stand-ins for registries that cannot run here (Sonatype Nexus, PyPI with its separate
files host), serving the link layouts those registries publish:

- Nexus: `/repository/pypi/simple/<project>/` with links relative to the page
  (`../../packages/<project>/<version>/<file>`), PEP 658 metadata files beside each file.
- PyPI: `/simple/<project>/` with absolute links to a different host that serves files.

Both answer PEP 503 HTML and, when asked through Accept, PEP 691 JSON, with the attributes
real registries send (requires-python, core-metadata, yanked, provenance). Like the real
ones, the index host demands HTTP Basic credentials and the files host does not. Every
request is recorded, with whether it carried credentials, so tests can prove where the
proxy sent them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import threading
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

USERNAME = "layout-user"
PASSWORD = "layout-secret-password"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


@dataclasses.dataclass
class Hit:
    host: str
    path: str
    authorization: str | None


class ThreadedServer:
    """An aiohttp app on a loopback port, served from its own thread and event loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = int(self._runner.addresses[0][1])
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Layouts:
    """The index host and the files host, sharing one record of hits."""

    def __init__(self, wheel: Path, metadata: str) -> None:
        self.wheel = wheel
        self.wheel_bytes = wheel.read_bytes()
        self.metadata = metadata.encode()
        self.hits: list[Hit] = []
        self.files = ThreadedServer(self._files_app()).start()
        self.index = ThreadedServer(self._index_app()).start()

    def stop(self) -> None:
        self.index.stop()
        self.files.stop()

    def hits_on(self, server: ThreadedServer) -> list[Hit]:
        return [h for h in self.hits if h.host.endswith(f":{server.port}")]

    # --- the index host -------------------------------------------------------------------

    def _index_app(self) -> web.Application:
        @web.middleware
        async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            header = request.headers.get("Authorization")
            self.hits.append(Hit(request.host, request.path, header))
            expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
            if header != expected:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
            response = await handler(request)
            response.set_cookie("SESSION", "registry-session-cookie")
            return response

        app = web.Application(middlewares=[basic_auth])
        app.router.add_get("/repository/pypi/simple/", self._nexus_root)
        app.router.add_get("/repository/pypi/simple/{project}/", self._nexus_project)
        app.router.add_get("/repository/pypi/packages/{project}/{version}/{name}", self._file)
        app.router.add_get("/simple/", self._nexus_root)
        app.router.add_get("/simple/{project}/", self._pypi_project)
        return app

    def _link_attributes(self) -> str:
        digest = hashlib.sha256(self.metadata).hexdigest()
        return (
            f'data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={digest}" '
            f'data-core-metadata="sha256={digest}"'
        )

    def _file_hash(self) -> str:
        return hashlib.sha256(self.wheel_bytes).hexdigest()

    async def _nexus_root(self, request: web.Request) -> web.Response:
        return web.Response(
            text='<html><body><a href="demo/">demo</a></body></html>', content_type="text/html"
        )

    async def _nexus_project(self, request: web.Request) -> web.Response:
        name = self.wheel.name
        relative = f"../../packages/demo/1.0/{name}#sha256={self._file_hash()}"
        foreign = f"{self.files.url}/elsewhere/other-2.0-py3-none-any.whl"
        return self._project_page(request, [(name, relative), ("other", foreign)])

    async def _pypi_project(self, request: web.Request) -> web.Response:
        name = self.wheel.name
        absolute = f"{self.files.url}/files/ab/cd/{name}#sha256={self._file_hash()}"
        return self._project_page(request, [(name, absolute)])

    def _project_page(self, request: web.Request, links: list[tuple[str, str]]) -> web.Response:
        if SIMPLE_JSON in request.headers.get("Accept", ""):
            files = [
                {
                    "filename": text,
                    "url": href.split("#")[0],
                    "hashes": {"sha256": self._file_hash()},
                    "requires-python": ">=3.8",
                    "core-metadata": {"sha256": hashlib.sha256(self.metadata).hexdigest()},
                    "yanked": False,
                    "provenance": href.split("#")[0] + ".provenance",
                }
                for text, href in links
            ]
            document = {"meta": {"api-version": "1.1"}, "name": "demo", "files": files}
            return web.json_response(document, content_type=SIMPLE_JSON, headers={"Vary": "Accept"})
        anchors = "\n".join(
            f'<a href="{href}" {self._link_attributes()}>{text}</a><br/>' for text, href in links
        )
        return web.Response(
            text=f"<!DOCTYPE html><html><body>\n{anchors}\n</body></html>",
            content_type="text/html",
            headers={"Vary": "Accept"},
        )

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == self.wheel.name:
            return web.Response(body=self.wheel_bytes, content_type="application/octet-stream")
        if name == self.wheel.name + ".metadata":
            return web.Response(body=self.metadata, content_type="application/octet-stream")
        raise web.HTTPNotFound()

    # --- the files host -------------------------------------------------------------------

    def _files_app(self) -> web.Application:
        async def serve(request: web.Request) -> web.Response:
            self.hits.append(Hit(request.host, request.path, request.headers.get("Authorization")))
            tail = request.match_info["tail"]
            if tail.endswith(self.wheel.name):
                return web.Response(body=self.wheel_bytes)
            if tail.endswith(self.wheel.name + ".metadata"):
                return web.Response(body=self.metadata)
            raise web.HTTPNotFound()

        app = web.Application()
        app.router.add_get("/{tail:.*}", serve)
        return app

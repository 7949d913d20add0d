"""The proxy's listening side: what any client that reaches the port may cost, before
anyone knows who it is.

- Idle and header timeouts: a connection that has not sent a whole request head within
  `idle_timeout_seconds` of connecting, or of its previous response, is closed.
- A connection budget below the process's file-descriptor limit: at the budget, the
  oldest connection with no request in progress (idle keep-alive, or still dribbling its
  headers) makes room for the new one; only when every connection is busy is the new one
  refused. Holding idle connections cannot lock real clients out.
- Malformed request heads get the status that says why (431 for oversized or too many
  headers, 414 for an oversized request line, 400 otherwise, HTTP/0.9 included) and a
  fixed message: nothing of what the client sent is echoed or logged, since an oversized
  header is often an Authorization carrying a token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import resource
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from connectors.api.errors import ConnectorsError

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 16 * 1024
MAX_HEADERS = 100
# Connections the kernel may queue before the proxy accepts them: aiohttp's 128 overflows
# when a few hundred clients connect at once (the kernel caps it at somaxconn).
LISTEN_BACKLOG = 4096
# File descriptors kept back from the budget: listening sockets, logs, key files, the
# API server's connections.
_RESERVED_DESCRIPTORS = 128


async def listen(site: web.TCPSite, host: str, port: int, what: str) -> None:
    """Start listening; a port that cannot be had is the user's to fix, in one line."""
    try:
        await site.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConnectorsError(
            f"cannot listen on {host}:{port} for {what}: {reason.lower()} "
            "(choose another HOST:PORT, or stop what holds it)"
        ) from None


def default_max_connections() -> int:
    """Half of what the file-descriptor limit leaves, since every admitted client may also
    hold one registry connection."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, (soft - _RESERVED_DESCRIPTORS) // 2)


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    idle_timeout_seconds: float = 60.0
    max_connections: int = dataclasses.field(default_factory=default_max_connections)


def _refusal(exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, LineTooLong):
        if exc.args[1] == MAX_LINE_BYTES:
            return 414, f"request line longer than {MAX_LINE_BYTES} bytes"
        return 431, f"a request header is longer than {MAX_FIELD_BYTES} bytes"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
        return 431, f"more than {MAX_HEADERS} request headers"
    return 400, "malformed HTTP request"


class GuardedRequestHandler(RequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if isinstance(manager, GuardedServer) and not manager.make_room():
            # Refused before aiohttp starts handling it, so nothing is left to clean up
            # and nothing is logged: anyone can open connections.
            transport.abort()  # type: ignore[attr-defined]
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already under way")
        if status == 500:
            log.error("request failed inside the proxy (%s)", exc.__class__.__name__)
            text = "internal error in the proxy"
        else:
            status, text = _refusal(exc)
            log.debug("refused a malformed request from %s: %s", request.remote, text)
        response = web.Response(status=status, text=text + "\n")
        response.force_close()
        return response


class GuardedServer(web.Server):
    def __init__(self, *args: Any, limits: ClientSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._handler_kwargs = kwargs
        self._opened: dict[RequestHandler, float] = {}
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        kwargs = {k: v for k, v in self._handler_kwargs.items() if k not in _SERVER_ONLY}
        return GuardedRequestHandler(self, loop=self._loop, **kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._opened[handler] = self._loop.time()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._opened.pop(handler, None)
        super().connection_lost(handler, exc)

    def make_room(self) -> bool:
        """Whether one more connection may be admitted, after closing the oldest idle one
        if the budget is full."""
        if len(self._opened) < self.limits.max_connections:
            return True
        # aiohttp has no public flag for "a request is being handled"; this is its own.
        idle = [h for h in self._opened if not getattr(h, "_request_in_progress", True)]
        if not idle:
            self.refused += 1
            return False
        victim = min(idle, key=self._opened.__getitem__)
        self.evicted += 1
        self._opened.pop(victim, None)
        victim.force_close()
        return True


_SERVER_ONLY = frozenset({"request_factory", "handler_cancellation", "loop"})


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server applies `ClientSettings`."""

    def __init__(self, app: web.Application, limits: ClientSettings) -> None:
        super().__init__(app, access_log=None)  # the audit line replaces the access log
        self.limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            access_log=None,
            keepalive_timeout=self.limits.idle_timeout_seconds,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
        )

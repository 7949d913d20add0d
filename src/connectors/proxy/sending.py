"""Sending answers to the proxy's clients: errors, held bodies and streamed writes, each
bounded by the idle timeout so that a client that stops reading loses its connection
instead of pinning memory or a slot, plus the request keys the audit line reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

# Set on the request when the registry failed: connect, timeout, protocol, truncated,
# refused, malformed, busy, mismatch.
UPSTREAM_ERROR = web.RequestKey("upstream_error", str)
# Body bytes that reached the client (aiohttp's own count includes the headers, and never
# sees what splice(2) moved); the audit middleware sets it for whole responses.
BODY_BYTES_SENT = web.RequestKey("body_bytes_sent", int)
# On a response the proxy made itself (never one passed on from a registry): what it says,
# for the audit line, which a 5xx then names by the request's id.
EXPLANATION = web.ResponseKey("explanation", str)
# SO_LINGER on with a zero timeout: closing sends a reset, not an orderly end.
_RESET = struct.pack("ii", 1, 0)


def error_response(
    status: int, message: str, *, challenge: bool = False, retry_after: int | None = None
) -> web.Response:
    headers: dict[str, str] = {}
    if challenge:
        headers["WWW-Authenticate"] = 'Basic realm="connectors"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    response = web.Response(status=status, text=message + "\n", headers=headers or None)
    response[EXPLANATION] = message
    return response


async def send_whole(
    request: web.Request, response: web.Response, size: int, idle_timeout_seconds: float
) -> web.Response:
    """Send a held body now, so that it stays counted until the client has it; a client
    that stops reading for the idle timeout loses its connection instead of pinning it."""
    try:
        async with asyncio.timeout(idle_timeout_seconds):
            await response.prepare(request)
            await response.write_eof()
    except TimeoutError:
        drop_client(request, "stopped reading")
        raise ConnectionResetError("the client stopped reading") from None
    request[BODY_BYTES_SENT] = 0 if request.method == "HEAD" else size
    return response


async def write(
    request: web.Request,
    response: web.StreamResponse,
    chunk: bytes | bytearray,
    idle_timeout_seconds: float,
) -> None:
    """Write one piece of a streamed body and count it for the audit line."""
    try:
        async with asyncio.timeout(idle_timeout_seconds):
            await response.write(chunk)
    except TimeoutError:
        drop_client(request, "stopped reading")
        raise ConnectionResetError("the client stopped reading") from None
    request[BODY_BYTES_SENT] = request.get(BODY_BYTES_SENT, 0) + len(chunk)


async def upstream_chunks(
    request: web.Request, upstream: aiohttp.ClientResponse, chunk_bytes: int
) -> AsyncIterator[bytes]:
    """The registry's body in pieces. If the registry cuts it short, the request is marked
    `truncated` and the client's connection reset, so that what it got cannot pass for the
    whole file; the pieces then simply end."""
    chunks = upstream.content.iter_chunked(chunk_bytes)
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            request[UPSTREAM_ERROR] = "truncated"
            log.warning("upstream body ended early (%s)", exc.__class__.__name__)
            drop_client(request, "was being sent a body the registry cut short")
            return
        yield chunk


def drop_client(request: web.Request, why: str) -> None:
    """Reset the client's connection now, dropping whatever still waits to be sent: a
    plain close would keep it until the client reads it, and would end a body without a
    length (HTTP/1.0) as if it were whole."""
    log.info("closing a client connection that %s", why)
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    transport.abort()

"""Relay a large response body from the registry's socket to the client's in the kernel.

Streaming through Python costs a copy into user space and out again for every chunk,
which caps a download at well under half of what nginx reaches on the same machine. On
Linux, `splice(2)` moves the bytes socket -> pipe -> socket without them ever reaching
Python. It is used only where nothing needs to look at or change the bytes: a plain-HTTP
response (no TLS on either side) with a known Content-Length of at least
`MIN_BYTES`, not an index page.

The event loop's transports own the two sockets, so the relay runs in a worker thread
with both transports paused and both sockets briefly in blocking mode, bounded by socket
timeouts; a small pool bounds how many relays run at once, and a request that finds it
full streams the ordinary way. The registry connection is closed afterwards rather than
reused (its HTTP parser never saw the body).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from connectors.api.errors import ConnectorsError
from connectors.proxy import sending

log = logging.getLogger(__name__)

MIN_BYTES = 8 * 1024 * 1024
PIPE_BYTES = 1024 * 1024
MAX_RELAYS = 32
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, missing from older Pythons' fcntl module

AVAILABLE = hasattr(os, "splice")


class RelayBroken(ConnectorsError):
    """The body could not be relayed whole; the client connection must be closed."""


class Relays:
    """The worker threads that run relays, and how many are busy."""

    def __init__(self, limit: int = MAX_RELAYS) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(limit, thread_name_prefix="splice")
        self._slots = threading.BoundedSemaphore(limit)

    def try_reserve(self) -> bool:
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()

    async def relay(
        self, source: socket.socket, sink: socket.socket, size: int, idle_seconds: float
    ) -> None:
        """Move `size` bytes; either side silent for `idle_seconds` breaks the relay."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, _relay_blocking, source, sink, size, idle_seconds)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def socket_of(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """The plain TCP socket under a transport, or None (TLS, or none at all)."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    # uvloop hands out a stand-in object; a real socket on the same descriptor is needed
    # for splice and the timeout options. It must not close the descriptor it borrows.
    return socket.socket(fileno=os.dup(sock.fileno()))


def spliceable(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    """Whether the rest of this answer may bypass Python: a plain-HTTP GET answered 200
    with a known length of at least MIN_BYTES, on both sides."""
    length = upstream.content_length
    return (
        AVAILABLE
        and request.method == "GET"
        and upstream.status == 200
        and length is not None
        and length >= MIN_BYTES
        and upstream.url.scheme == "http"
        and not request.secure
    )


async def relay_rest(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    relays: Relays,
    *,
    idle_timeout_seconds: float,
    otherwise: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Send what aiohttp already read, then let the kernel move the rest; `otherwise`
    streams it the ordinary way when the sockets cannot be had."""
    up_transport = upstream.connection.transport if upstream.connection else None
    client = request.transport
    source, sink = socket_of(up_transport), socket_of(client)
    if up_transport is None or client is None or source is None or sink is None:
        for sock in (source, sink):
            if sock is not None:
                sock.close()
        return await otherwise()
    # Take what aiohttp holds, then stop it reading, with no await in between: reading
    # the buffer may resume the transport, and any later byte would be lost to aiohttp.
    buffered = upstream.content.read_nowait()
    up_transport.pause_reading()
    if buffered:
        await sending.write(request, response, buffered, idle_timeout_seconds)
    # Keep the bytes in order on the wire: nothing may still wait in the transport's buffer.
    # A client that stops reading meanwhile gets the same timeout as a silent registry.
    deadline = asyncio.get_running_loop().time() + idle_timeout_seconds
    while client.get_write_buffer_size():
        if asyncio.get_running_loop().time() > deadline:
            source.close()  # the duplicates; the relay would have closed them
            sink.close()
            upstream.close()
            client.close()
            return response
        await asyncio.sleep(0.001)
    client.pause_reading()
    remaining = (upstream.content_length or 0) - len(buffered)
    try:
        await relays.relay(source, sink, remaining, idle_timeout_seconds)
    except RelayBroken as exc:
        request[sending.UPSTREAM_ERROR] = "truncated"
        log.warning("relaying a body failed (%s); closing the client connection", exc)
        client.close()
        return response
    finally:
        upstream.close()  # its parser never saw the body: the connection cannot be reused
    request[sending.BODY_BYTES_SENT] = len(buffered) + remaining
    client.resume_reading()
    await response.write_eof()
    return response


def _relay_blocking(source: socket.socket, sink: socket.socket, size: int, timeout: float) -> None:
    seconds = int(timeout)
    micros = int((timeout - seconds) * 1_000_000)
    limit = struct.pack("ll", seconds, micros)
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_BYTES)
        for sock, option in ((source, socket.SO_RCVTIMEO), (sink, socket.SO_SNDTIMEO)):
            sock.setblocking(True)
            sock.setsockopt(socket.SOL_SOCKET, option, limit)
        remaining = size
        while remaining > 0:
            moved = os.splice(source.fileno(), write_end, min(PIPE_BYTES, remaining))
            if moved == 0:
                raise RelayBroken(f"the registry closed with {remaining} bytes still to come")
            remaining -= moved
            while moved > 0:
                sent = os.splice(read_end, sink.fileno(), moved)
                if sent == 0:
                    raise RelayBroken("the client stopped taking bytes")
                moved -= sent
    except OSError as exc:  # timeouts (EAGAIN with SO_*TIMEO), resets
        raise RelayBroken(exc.__class__.__name__) from exc
    finally:
        os.close(read_end)
        os.close(write_end)
        never = struct.pack("ll", 0, 0)
        for sock in (source, sink):
            # The options and blocking mode belong to the socket the transport shares with
            # this duplicate descriptor: give the transport back what it had.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, never)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, never)
                sock.setblocking(False)
            sock.close()  # the duplicate only

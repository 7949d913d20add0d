"""Forward one authorized request to the registry and relay the answer.

Bodies stream both ways without being held whole, except index pages, which are read
(bounded by their decoded size and by the tenant's byte budget) so their links can be
rewritten, and small files, sent in one write. Headers pass by allowlist in both
directions: the registry sees what a package client needs plus what the proxy sets (the
connector's credentials, only on the connector's own host), and the client sees what it
needs back, never the registry's cookies or authentication challenges.

Every way the registry can fail maps to one response in `_FAILURES`: the registry's
failures are 502 or 504 naming the connector, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Iterator

import aiohttp
import yarl
from aiohttp import web

from connectors.api.errors import Overloaded, RegistryDataError
from connectors.proxy import splice
from connectors.proxy.decoding import BoundedDecoder
from connectors.proxy.fairness import ByteBudget, FairnessSettings, Holding, Shares
from connectors.proxy.links import Upstream
from connectors.proxy.rewritecache import RewriteCache
from connectors.proxy.targets import Target

log = logging.getLogger(__name__)

# End-to-end request headers a package client (pip, uv, twine, poetry...) needs the
# registry to see. Everything else (the client's Authorization and cookies, hop-by-hop
# headers, method overrides, forwarding claims) stays at the proxy.
REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "cache-control",
        "content-type",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "pragma",
        "range",
        "user-agent",
    }
)
# What a client needs back from the registry. Content-Length is the proxy's own.
RESPONSE_HEADERS = frozenset(
    {
        "accept-ranges",
        "age",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expires",
        "last-modified",
        "location",
        "retry-after",
        "vary",
        "x-pypi-last-serial",
    }
)

# Set on the request when the registry failed: connect, timeout, protocol, truncated,
# refused, malformed, busy.
UPSTREAM_ERROR = "connectors.upstream_error"
# Body bytes that reached the client (aiohttp's own count includes the headers, and never
# sees what splice(2) moved); the audit middleware sets it for whole responses.
BODY_BYTES_SENT = "connectors.body_bytes_sent"
# Seconds between two yields to the event loop while a large page is decoded or rewritten.
_SLICE_SECONDS = 0.002


@dataclasses.dataclass(frozen=True)
class Resources:
    """What forwarding shares across requests, opened and closed with the app."""

    session: aiohttp.ClientSession
    rewrites: RewriteCache
    relays: splice.Relays | None
    shares: Shares
    budget: ByteBudget


@dataclasses.dataclass(frozen=True)
class ForwardSettings:
    connect_timeout_seconds: float = 10.0
    # From sending a body-less request until the registry's response headers.
    first_byte_timeout_seconds: float = 60.0
    # The longest silence while a response (or, for uploads, its headers) is awaited.
    idle_timeout_seconds: float = 60.0
    max_index_bytes: int = 64 * 1024 * 1024
    chunk_bytes: int = 1024 * 1024
    # Bodies up to this size are read whole and sent with the headers in one write:
    # metadata files and small wheels cost more to stream than to hold.
    whole_body_bytes: int = 256 * 1024
    # An index page over this size, decoded, is large: it waits for one of its namespace's
    # rewrite slots before more of it is read.
    large_page_bytes: int = 4 * 1024 * 1024
    fairness: FairnessSettings = FairnessSettings()


def error_response(
    status: int, message: str, *, challenge: bool = False, retry_after: int | None = None
) -> web.Response:
    headers: dict[str, str] = {}
    if challenge:
        headers["WWW-Authenticate"] = 'Basic realm="connectors"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(status=status, text=message + "\n", headers=headers or None)


def _request_headers(request: web.Request, target: Target, destination: Upstream) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
    # Index pages must be readable to be rewritten; files are not compressed in transit
    # by registries anyway, so asking for identity costs nothing.
    headers["Accept-Encoding"] = "identity"
    if destination.credentialed and target.credentials is not None:
        headers["Authorization"] = target.credentials.authorization()
    return headers


def _response_headers(
    upstream: aiohttp.ClientResponse, target: Target, client_base: str
) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in upstream.headers.items():
        lower = key.lower()
        if lower not in RESPONSE_HEADERS:
            continue
        if lower == "location":
            try:
                absolute = str(upstream.url.join(yarl.URL(value)))
            except ValueError as exc:
                raise RegistryDataError("the registry redirected to an unreadable URL") from exc
            headers[key] = target.link_map.to_client(absolute, client_base) or value
        else:
            headers[key] = value
    return headers


@dataclasses.dataclass(frozen=True)
class _Failure:
    kind: str  # the UPSTREAM_ERROR value and the metric's label
    status: int
    message: str  # formatted with where (namespace/name), origin, error, timeouts


# The first row whose exception type matches decides: order matters (aiohttp's timeouts
# are ClientErrors too).
_FAILURES: tuple[tuple[type[BaseException], _Failure], ...] = (
    (Overloaded, _Failure("busy", 503, "{error}")),
    (
        RegistryDataError,
        _Failure(
            "malformed",
            502,
            "the registry of connector {where} sent an answer the proxy cannot use: {error}",
        ),
    ),
    (
        aiohttp.ClientConnectorError,
        _Failure(
            "connect",
            502,
            "cannot reach the registry of connector {where} at {origin}: connection failed",
        ),
    ),
    (
        TimeoutError,
        _Failure(
            "timeout",
            504,
            "the registry of connector {where} did not answer in time "
            "(connect {connect:g}s, first byte {first_byte:g}s, silence {idle:g}s)",
        ),
    ),
    (
        aiohttp.ClientError,
        _Failure("protocol", 502, "the registry of connector {where} failed: {kind}"),
    ),
)


def _failure_response(
    request: web.Request,
    exc: BaseException,
    target: Target,
    destination: Upstream,
    settings: ForwardSettings,
) -> web.Response:
    failure = next(f for kind, f in _FAILURES if isinstance(exc, kind))
    where = f"{target.connector.namespace}/{target.connector.name}"
    request[UPSTREAM_ERROR] = failure.kind
    message = failure.message.format(
        where=where,
        origin=_origin(destination.url),
        error=exc,
        kind=exc.__class__.__name__,
        connect=settings.connect_timeout_seconds,
        first_byte=settings.first_byte_timeout_seconds,
        idle=settings.idle_timeout_seconds,
    )
    if failure.status != 503:
        log.warning("connector %s: %s (%s)", where, failure.kind, exc.__class__.__name__)
    return error_response(failure.status, message, retry_after=1 if failure.status == 503 else None)


async def forward(
    request: web.Request,
    target: Target,
    destination: Upstream,
    *,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
) -> web.StreamResponse:
    connector = target.connector
    try:
        async with resources.shares.request_slot(connector.namespace, connector.name):
            return await _exchange(
                request,
                target=target,
                destination=destination,
                client_base=client_base,
                resources=resources,
                settings=settings,
            )
    except tuple(kind for kind, _ in _FAILURES) as exc:
        return _failure_response(request, exc, target, destination, settings)


async def _exchange(
    request: web.Request,
    *,
    target: Target,
    destination: Upstream,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
) -> web.StreamResponse:
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.connect_timeout_seconds,
        sock_connect=settings.connect_timeout_seconds,
        sock_read=settings.idle_timeout_seconds,
    )
    body = request.content if request.body_exists else None
    # An upload's headers come only after the client's whole body: the silence timeout
    # bounds the wait after it, as the first-byte timeout does for everything else.
    async with asyncio.timeout(settings.first_byte_timeout_seconds if body is None else None):
        upstream = await resources.session.request(
            request.method,
            yarl.URL(destination.url, encoded=True),
            headers=_request_headers(request, target, destination),
            data=body,
            allow_redirects=False,
            timeout=timeout,
            ssl=target.tls if destination.url.startswith("https:") else True,
        )
    try:
        return await _relay(
            request,
            upstream,
            target=target,
            destination=destination,
            client_base=client_base,
            resources=resources,
            settings=settings,
        )
    finally:
        upstream.release()


async def _relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    *,
    target: Target,
    destination: Upstream,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
) -> web.StreamResponse:
    if upstream.status == 401 and destination.credentialed:
        request[UPSTREAM_ERROR] = "refused"
        where = f"{target.connector.namespace}/{target.connector.name}"
        return error_response(
            502,
            f"the registry of connector {where} refused the connector's "
            "credentials; its AuthReady condition says more",
        )
    if not 200 <= upstream.status <= 599:
        raise RegistryDataError(f"an answer with HTTP status {upstream.status}")
    headers = _response_headers(upstream, target, client_base)
    if (
        request.method == "GET"
        and upstream.status == 200
        and target.protocol.is_rewritable(upstream.content_type)
    ):
        return await _rewritten(
            request,
            upstream,
            headers,
            target=target,
            client_base=client_base,
            resources=resources,
            settings=settings,
        )
    if _small(request, upstream, settings):
        with resources.budget.holding(target.connector.namespace) as held:
            if held.try_take(upstream.content_length or 0):
                return await _whole(request, upstream, headers, settings)
    return await _streamed(request, upstream, headers, settings, resources.relays)


class _Slicer:
    """Yields to the event loop once a slice of time has gone into one request's work."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()

    async def pause(self) -> None:
        if self.loop.time() - self.since >= _SLICE_SECONDS:
            await asyncio.sleep(0)
            self.since = self.loop.time()


async def _rewritten(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    *,
    target: Target,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
) -> web.StreamResponse:
    """Read, rewrite and send an index page, holding its bytes in the tenant's budget until
    the client has them all. A large page also takes one of the namespace's rewrite slots
    once it is found to be large, decoding included: a compression bomb costs CPU before
    it is found out, and small pages, the common case, never wait for one."""
    encoding = next((headers.pop(k) for k in list(headers) if k.lower() == "content-encoding"), "")
    decoder = BoundedDecoder(encoding, settings.max_index_bytes)
    namespace = target.connector.namespace
    slicer = _Slicer()
    async with contextlib.AsyncExitStack() as large:
        with resources.budget.holding(namespace) as held:
            page = bytearray()
            digest = hashlib.blake2b(digest_size=16)
            slotted = False
            async for chunk in upstream.content.iter_any():
                for piece in decoder.feed(chunk):
                    await _append(page, piece, digest, held, slicer)
                    if not slotted and len(page) > settings.large_page_bytes:
                        slot = resources.shares.rewrite_slot(namespace)
                        await large.enter_async_context(slot)
                        slotted = True
            for piece in decoder.finish():
                await _append(page, piece, digest, held, slicer)
            page_url = str(upstream.url)
            cache = resources.rewrites
            key = cache.key(
                target.link_map, page_url, client_base, upstream.content_type, digest.digest()
            )
            rewritten: bytes | bytearray | None = cache.get(key)
            if rewritten is None:
                rewritten = await _joined(
                    target.protocol.rewrite(
                        page,
                        upstream.content_type,
                        page_url,
                        lambda url: target.link_map.to_client(url, client_base),
                    ),
                    held,
                    slicer,
                    limit=2 * settings.max_index_bytes,
                )
                cache.put(key, rewritten)
            del page
            response = web.Response(
                status=upstream.status, reason=upstream.reason, body=rewritten, headers=headers
            )
            return await _send_whole(request, response, len(rewritten), settings)


async def _append(
    page: bytearray, piece: bytes, digest: hashlib.blake2b, held: Holding, slicer: _Slicer
) -> None:
    held.take(len(piece))
    page += piece
    digest.update(piece)
    await slicer.pause()


async def _joined(
    pieces: Iterator[bytes | bytearray], held: Holding, slicer: _Slicer, *, limit: int
) -> bytearray:
    """The rewritten page, charged to the budget as it grows: its size depends on the
    page's links and on the client's base URL, not only on the registry's bytes."""
    out = bytearray()
    for piece in pieces:
        held.take(len(piece))
        out += piece
        if len(out) > limit:
            raise RegistryDataError(f"an index page larger than {limit} bytes once rewritten")
        await slicer.pause()
    return out


async def _send_whole(
    request: web.Request, response: web.Response, size: int, settings: ForwardSettings
) -> web.Response:
    """Send a held body now, so that it stays counted until the client has it; a client
    that stops reading for the idle timeout loses its connection instead of pinning it."""
    try:
        async with asyncio.timeout(settings.idle_timeout_seconds):
            await response.prepare(request)
            await response.write_eof()
    except TimeoutError:
        _drop_client(request, "stopped reading")
        raise ConnectionResetError("the client stopped reading") from None
    request[BODY_BYTES_SENT] = 0 if request.method == "HEAD" else size
    return response


def _drop_client(request: web.Request, why: str) -> None:
    """Close the client's connection now, dropping whatever still waits to be sent: a
    plain close would keep it until the client reads it."""
    log.info("closing a client connection that %s", why)
    if request.transport is not None:
        request.transport.abort()


def _small(
    request: web.Request, upstream: aiohttp.ClientResponse, settings: ForwardSettings
) -> bool:
    length = upstream.content_length
    return request.method != "HEAD" and length is not None and length <= settings.whole_body_bytes


async def _whole(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    settings: ForwardSettings,
) -> web.Response:
    """Nothing has reached the client yet, so a body cut short becomes a plain 502."""
    try:
        body = await upstream.read()
    except aiohttp.ClientPayloadError:
        request[UPSTREAM_ERROR] = "truncated"
        return error_response(502, "the registry's answer ended before its declared length")
    response = web.Response(
        status=upstream.status, reason=upstream.reason, body=body, headers=headers
    )
    return await _send_whole(request, response, len(body), settings)


async def _streamed(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    settings: ForwardSettings,
    relays: splice.Relays | None,
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    if request.transport is not None:
        # Let one whole read from the registry sit in the send buffer before waiting on
        # the client, instead of pausing every 64 KiB; no more, so that memory per slow
        # client stays near two reads.
        request.transport.set_write_buffer_limits(high=settings.chunk_bytes)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    if relays is not None and _spliceable(request, upstream) and relays.try_reserve():
        try:
            return await _spliced(request, upstream, response, relays, settings)
        finally:
            relays.release()
    return await _stream_rest(request, upstream, response, settings)


def _spliceable(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    length = upstream.content_length
    return (
        splice.AVAILABLE
        and request.method == "GET"
        and upstream.status == 200
        and length is not None
        and length >= splice.MIN_BYTES
        and upstream.url.scheme == "http"
        and not request.secure
    )


async def _spliced(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    relays: splice.Relays,
    settings: ForwardSettings,
) -> web.StreamResponse:
    """Send what aiohttp already read, then let the kernel move the rest."""
    up_transport = upstream.connection.transport if upstream.connection else None
    client = request.transport
    source, sink = splice.socket_of(up_transport), splice.socket_of(client)
    if up_transport is None or client is None or source is None or sink is None:
        for sock in (source, sink):
            if sock is not None:
                sock.close()
        return await _stream_rest(request, upstream, response, settings)
    # Take what aiohttp holds, then stop it reading, with no await in between: reading
    # the buffer may resume the transport, and any later byte would be lost to aiohttp.
    buffered = upstream.content.read_nowait()
    up_transport.pause_reading()
    if buffered:
        await _write(request, response, buffered, settings)
        request[BODY_BYTES_SENT] = len(buffered)
    # Keep the bytes in order on the wire: nothing may still wait in the transport's buffer.
    # A client that stops reading meanwhile gets the same timeout as a silent registry.
    deadline = asyncio.get_running_loop().time() + settings.idle_timeout_seconds
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
        await relays.relay(source, sink, remaining, settings.idle_timeout_seconds)
    except splice.RelayBroken as exc:
        request[UPSTREAM_ERROR] = "truncated"
        log.warning("relaying a body failed (%s); closing the client connection", exc)
        client.close()
        return response
    finally:
        upstream.close()  # its parser never saw the body: the connection cannot be reused
    request[BODY_BYTES_SENT] = len(buffered) + remaining
    client.resume_reading()
    await response.write_eof()
    return response


async def _stream_rest(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    settings: ForwardSettings,
) -> web.StreamResponse:
    chunks = upstream.content.iter_chunked(settings.chunk_bytes)
    while True:
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            break
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The body is cut short: close the connection so the client cannot mistake
            # what it got for the whole file.
            request[UPSTREAM_ERROR] = "truncated"
            log.warning(
                "upstream body ended early (%s); closing the client connection",
                exc.__class__.__name__,
            )
            _drop_client(request, "was being sent a body the registry cut short")
            return response
        # A client that went away raises ConnectionError here: the audit line says 499.
        await _write(request, response, chunk, settings)
        request[BODY_BYTES_SENT] = request.get(BODY_BYTES_SENT, 0) + len(chunk)
    await response.write_eof()
    return response


async def _write(
    request: web.Request, response: web.StreamResponse, chunk: bytes, settings: ForwardSettings
) -> None:
    try:
        async with asyncio.timeout(settings.idle_timeout_seconds):
            await response.write(chunk)
    except TimeoutError:
        _drop_client(request, "stopped reading")
        raise ConnectionResetError("the client stopped reading") from None


def _origin(url: str) -> str:
    parsed = yarl.URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.explicit_port else "")

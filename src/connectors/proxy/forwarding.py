"""Forward one authorized request to the registry and relay the answer.

Bodies stream both ways without being held whole, except index pages, which are read
(bounded) so their links can be rewritten. The client's Authorization never goes upstream;
the connector's credentials go only to the connector's own host. Cookies the registry sets
are dropped: a registry session cookie is a credential too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import zlib

import aiohttp
import yarl
from aiohttp import web

from connectors.proxy import splice
from connectors.proxy.links import Upstream
from connectors.proxy.rewritecache import RewriteCache
from connectors.proxy.targets import Target

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROPPED = HOP_BY_HOP | {"host", "authorization", "cookie", "accept-encoding", "expect"}
_RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie", "content-length", "www-authenticate"}

# Set on the request when the registry failed: connect, timeout, protocol, truncated, refused.
UPSTREAM_ERROR = "connectors.upstream_error"
# Body bytes that went to the client by splice(2), outside aiohttp's own count.
SPLICED_BYTES = "connectors.spliced_bytes"


@dataclasses.dataclass(frozen=True)
class Resources:
    """What forwarding shares across requests, opened and closed with the app."""

    session: aiohttp.ClientSession
    rewrites: RewriteCache
    relays: splice.Relays | None


@dataclasses.dataclass(frozen=True)
class ForwardSettings:
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 300.0
    max_index_bytes: int = 64 * 1024 * 1024
    chunk_bytes: int = 1024 * 1024
    # Bodies up to this size are read whole and sent with the headers in one write:
    # metadata files and small wheels cost more to stream than to hold.
    whole_body_bytes: int = 256 * 1024


def error_response(status: int, message: str, *, challenge: bool = False) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="connectors"'} if challenge else None
    return web.Response(status=status, text=message + "\n", headers=headers)


def _request_headers(request: web.Request, target: Target, destination: Upstream) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_DROPPED}
    # Index pages must be readable to be rewritten; files are not compressed in transit
    # by registries anyway, so asking for identity costs nothing.
    headers["Accept-Encoding"] = "identity"
    if destination.own_host and target.credentials is not None:
        headers["Authorization"] = target.credentials.authorization()
    return headers


def _response_headers(
    upstream: aiohttp.ClientResponse, target: Target, client_base: str
) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in upstream.headers.items():
        lower = key.lower()
        if lower in _RESPONSE_DROPPED:
            continue
        if lower == "location":
            absolute = str(upstream.url.join(yarl.URL(value)))
            headers[key] = target.link_map.to_client(absolute, client_base) or value
        else:
            headers[key] = value
    return headers


async def forward(
    request: web.Request,
    target: Target,
    destination: Upstream,
    *,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
) -> web.StreamResponse:
    session, cache = resources.session, resources.rewrites
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.connect_timeout_seconds,
        sock_connect=settings.connect_timeout_seconds,
        sock_read=settings.read_timeout_seconds,
    )
    body = request.content if request.body_exists else None
    where = f"{target.connector.namespace}/{target.connector.name}"
    try:
        async with session.request(
            request.method,
            yarl.URL(destination.url, encoded=True),
            headers=_request_headers(request, target, destination),
            data=body,
            allow_redirects=False,
            timeout=timeout,
            ssl=target.tls if destination.url.startswith("https:") else True,
        ) as upstream:
            if upstream.status == 401 and destination.own_host:
                request[UPSTREAM_ERROR] = "refused"
                return error_response(
                    502,
                    f"the registry of connector {where} refused the connector's "
                    "credentials; its AuthReady condition says more",
                )
            headers = _response_headers(upstream, target, client_base)
            if (
                request.method == "GET"
                and upstream.status == 200
                and target.protocol.is_rewritable(upstream.content_type)
            ):
                return await _rewritten(
                    upstream, headers, target, client_base, settings=settings, cache=cache
                )
            if _small(request, upstream, settings):
                return await _whole(request, upstream, headers)
            return await _streamed(request, upstream, headers, settings, resources.relays)
    except aiohttp.ClientConnectorError as exc:
        request[UPSTREAM_ERROR] = "connect"
        log.warning(
            "connector %s: cannot reach %s: %s",
            where,
            _origin(destination.url),
            exc.os_error.__class__.__name__,
        )
        return error_response(
            502,
            f"cannot reach the registry of connector {where} at "
            f"{_origin(destination.url)}: connection failed",
        )
    except TimeoutError:
        request[UPSTREAM_ERROR] = "timeout"
        return error_response(
            504,
            f"the registry of connector {where} did not answer within "
            f"{settings.read_timeout_seconds:g}s",
        )
    except aiohttp.ClientError as exc:
        request[UPSTREAM_ERROR] = "protocol"
        log.warning("connector %s: upstream failed: %s", where, exc.__class__.__name__)
        return error_response(
            502, f"the registry of connector {where} failed: {exc.__class__.__name__}"
        )


async def _rewritten(
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    target: Target,
    client_base: str,
    *,
    settings: ForwardSettings,
    cache: RewriteCache,
) -> web.Response:
    raw = bytearray()
    async for chunk in upstream.content.iter_any():
        raw += chunk
        if len(raw) > settings.max_index_bytes:
            return error_response(
                502, f"the registry's index page is larger than {settings.max_index_bytes} bytes"
            )
    data = _decoded(bytes(raw), headers)
    page_url = str(upstream.url)
    key = cache.key(target.link_map, page_url, client_base, upstream.content_type, data)
    rewritten = cache.get(key)
    if rewritten is None:
        rewritten = target.protocol.rewrite(
            data,
            upstream.content_type,
            page_url,
            lambda url: target.link_map.to_client(url, client_base),
        )
        cache.put(key, rewritten)
    return web.Response(
        status=upstream.status, reason=upstream.reason, body=rewritten, headers=headers
    )


def _decoded(data: bytes, headers: dict[str, str]) -> bytes:
    """Undo a content encoding the registry applied despite being asked for identity."""
    for key in list(headers):
        if key.lower() == "content-encoding":
            encoding = headers.pop(key).lower()
            if encoding in ("gzip", "deflate"):
                return zlib.decompress(data, zlib.MAX_WBITS | 32)
    return data


def _small(
    request: web.Request, upstream: aiohttp.ClientResponse, settings: ForwardSettings
) -> bool:
    length = upstream.content_length
    return request.method != "HEAD" and length is not None and length <= settings.whole_body_bytes


async def _whole(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str]
) -> web.Response:
    """Nothing has reached the client yet, so a body cut short becomes a plain 502."""
    try:
        body = await upstream.read()
    except aiohttp.ClientPayloadError:
        request[UPSTREAM_ERROR] = "truncated"
        return error_response(502, "the registry's answer ended before its declared length")
    return web.Response(status=upstream.status, reason=upstream.reason, body=body, headers=headers)


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
        await response.write(buffered)
    # Keep the bytes in order on the wire: nothing may still wait in the transport's buffer.
    # A client that stops reading meanwhile gets the same timeout as a silent registry.
    deadline = asyncio.get_running_loop().time() + settings.read_timeout_seconds
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
        await relays.relay(source, sink, remaining, settings.read_timeout_seconds)
    except splice.RelayBroken as exc:
        request[UPSTREAM_ERROR] = "truncated"
        log.warning("relaying a body failed (%s); closing the client connection", exc)
        client.close()
        return response
    finally:
        upstream.close()  # its parser never saw the body: the connection cannot be reused
    request[SPLICED_BYTES] = remaining
    client.resume_reading()
    await response.write_eof()
    return response


async def _stream_rest(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    settings: ForwardSettings,
) -> web.StreamResponse:
    try:
        async for chunk in upstream.content.iter_chunked(settings.chunk_bytes):
            await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The body is cut short: close the connection so the client cannot mistake what
        # it got for the whole file.
        request[UPSTREAM_ERROR] = "truncated"
        log.warning(
            "upstream body ended early (%s); closing the client connection", exc.__class__.__name__
        )
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _origin(url: str) -> str:
    parsed = yarl.URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.explicit_port else "")

"""Forward one authorized request to the registry and relay the answer.

Bodies stream both ways without being held whole, except index pages (`pages`), which are
read so their links can be rewritten, and small files, sent in one write. Files an index
page advertised a sha256 for go through the cache of files (`cachedfiles`). Headers pass
by allowlist in both directions: the registry sees what a package client needs plus what
the proxy sets (the connector's credentials, only on the connector's own host), and the
client sees what it needs back, never the registry's cookies or authentication challenges.

Every way the registry can fail before the client has a byte maps to one response in
`FAILURES`, raised from wherever it is found: 502 or 504 naming the connector, never a 500.
Once the answer has begun, a failure can only close the client's connection, so a cut-short
body never looks complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import logging

import aiohttp
import yarl
from aiohttp import web

from connectors.api import addresses
from connectors.api.errors import (
    DigestMismatch,
    Overloaded,
    RegistryDataError,
    RegistryRefused,
    RegistryTruncated,
)
from connectors.proxy import cachedfiles, pages, sending, splice
from connectors.proxy import headers as header_policy
from connectors.proxy.fairness import ByteBudget, FairnessSettings, Shares
from connectors.proxy.filecache import CacheSettings, FileCache, Fill
from connectors.proxy.links import Upstream
from connectors.proxy.pages import Key as PageKey
from connectors.proxy.pages import Page, PageCache
from connectors.proxy.targets import Target

log = logging.getLogger(__name__)

# The audit line reads these; they live with the code that sends answers.
UPSTREAM_ERROR = sending.UPSTREAM_ERROR
BODY_BYTES_SENT = sending.BODY_BYTES_SENT
EXPLANATION = sending.EXPLANATION
# The origin an answer redirected the client to, off the hosts the connector covers.
REDIRECTED_OFF_HOST = web.RequestKey("redirected_off_host", str)
error_response = sending.error_response


@dataclasses.dataclass(frozen=True)
class Resources:
    """What forwarding shares across requests, opened and closed with the app."""

    session: aiohttp.ClientSession
    pages: PageCache
    files: FileCache | None
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
    cache: CacheSettings = CacheSettings()

    @functools.cached_property
    def client_timeout(self) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for one registry request, made once."""
        return aiohttp.ClientTimeout(
            total=None,
            connect=self.connect_timeout_seconds,
            sock_connect=self.connect_timeout_seconds,
            sock_read=self.idle_timeout_seconds,
        )


def _request_headers(
    request: web.Request, target: Target, destination: Upstream, known: Page | None
) -> dict[str, str]:
    return header_policy.to_registry(
        request.headers,
        credentials=target.credentials if destination.credentialed else None,
        validators=known.validators if known is not None else {},
    )


def _response_headers(
    request: web.Request, upstream: aiohttp.ClientResponse, target: Target, client_base: str
) -> dict[str, str]:
    passed, off_host = header_policy.to_client(
        upstream.headers, str(upstream.url), target.link_map, client_base
    )
    if off_host is not None:
        request[REDIRECTED_OFF_HOST] = off_host
    return passed


@dataclasses.dataclass(frozen=True)
class Failure:
    """How the proxy answers one way the registry failed."""

    kind: str  # the UPSTREAM_ERROR value and the metric's label
    status: int
    message: str  # formatted with where (namespace/name), origin, error, timeouts


# The first row whose exception type matches decides: order matters (aiohttp's timeouts
# are ClientErrors too).
FAILURES: tuple[tuple[type[BaseException], Failure], ...] = (
    (Overloaded, Failure("busy", 503, "{error}")),
    (
        RegistryRefused,
        Failure(
            "refused",
            502,
            "the registry of connector {where} refused the connector's credentials; "
            "its AuthReady condition says more",
        ),
    ),
    (
        RegistryTruncated,
        Failure(
            "truncated",
            502,
            "the registry of connector {where} sent an answer that ended before its "
            "declared length",
        ),
    ),
    (
        DigestMismatch,
        Failure(
            "mismatch",
            502,
            "the registry of connector {where} sent a file whose sha256 is not the one "
            "its index advertised",
        ),
    ),
    (
        RegistryDataError,
        Failure(
            "malformed",
            502,
            "the registry of connector {where} sent an answer the proxy cannot use: {error}",
        ),
    ),
    (
        aiohttp.ClientConnectorError,
        Failure(
            "connect",
            502,
            "cannot reach the registry of connector {where} at {origin}: connection failed; "
            "its LivenessReady condition says what the connector's probes find",
        ),
    ),
    (
        TimeoutError,
        Failure(
            "timeout",
            504,
            "the registry of connector {where} did not answer in time "
            "(connect {connect:g}s, first byte {first_byte:g}s, silence {idle:g}s); "
            "its LivenessReady condition says what the connector's probes find",
        ),
    ),
    (
        aiohttp.ClientError,
        Failure(
            "protocol",
            502,
            "the registry of connector {where} broke off the exchange ({kind}); "
            "its LivenessReady condition says what the connector's probes find",
        ),
    ),
)
_FAILURE_TYPES = tuple(kind for kind, _ in FAILURES)


def explain_failure(
    exc: BaseException, where: str, registry_url: str, settings: ForwardSettings
) -> tuple[Failure, str]:
    """The row of `FAILURES` for `exc`, and its message for the client: names the
    connector and the registry's origin (never its userinfo), and the timeouts."""
    failure = next(f for kind, f in FAILURES if isinstance(exc, kind))
    message = failure.message.format(
        where=where,
        origin=addresses.origin(registry_url),
        error=exc,
        kind=exc.__class__.__name__,
        connect=settings.connect_timeout_seconds,
        first_byte=settings.first_byte_timeout_seconds,
        idle=settings.idle_timeout_seconds,
    )
    return failure, message


def _failure_response(
    request: web.Request,
    exc: BaseException,
    target: Target,
    destination: Upstream,
    settings: ForwardSettings,
) -> web.Response:
    where = f"{target.connector.namespace}/{target.connector.name}"
    failure, message = explain_failure(exc, where, destination.url, settings)
    request[UPSTREAM_ERROR] = failure.kind
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
    exchange = functools.partial(
        _exchange,
        request,
        target=target,
        destination=destination,
        client_base=client_base,
        resources=resources,
        settings=settings,
    )
    files = resources.files
    try:
        async with resources.shares.request_slot(connector.namespace, connector.name):
            if files is None or destination.sha256 is None or request.method not in ("GET", "HEAD"):
                return await exchange()
            key = (target.cache_scope, destination.sha256)
            cached = await cachedfiles.from_cache(
                request,
                files,
                key,
                connector.namespace,
                whole_body_bytes=settings.whole_body_bytes,
                chunk_bytes=settings.chunk_bytes,
                idle_timeout_seconds=settings.idle_timeout_seconds,
            )
            if cached is not None:
                return cached
            if request.method == "HEAD":
                return await exchange()
            fill = cachedfiles.flight(files, key)
            try:
                return await exchange(fill=fill)
            finally:
                fill.abandon()  # nothing if it ended well
    except _FAILURE_TYPES as exc:
        return _failure_response(request, exc, target, destination, settings)


def _known_page(
    request: web.Request, target: Target, destination: Upstream, client_base: str, cache: PageCache
) -> tuple[PageKey, Page | None]:
    """The page as last answered, when this request may be revalidated with its
    validators: a GET the client did not make conditional itself."""
    accept = request.headers.get("Accept", "")
    key = cache.key(target.link_map, destination.url, client_base, accept)
    if request.method != "GET" or any(h in request.headers for h in pages.CLIENT_CONDITIONS):
        return key, None
    return key, cache.get(key)


class Answer(enum.Enum):
    """What the proxy does with a registry's answer."""

    PAGE = "page"  # an index page: read, rewritten and remembered
    REMEMBERED_PAGE = "remembered page"  # the registry's 304 for a page answered from memory
    GONE = "gone"  # passed on; what the page at this URL named is no longer current
    PASSED_ON = "passed on"  # streamed to the client as it comes


def answer_kind(method: str, status: int, *, rewritable: bool, remembered: bool) -> Answer:
    """The one decision about an answer (other than a checked file's), from its request
    method and status, whether its content type is an index page this connector's protocol
    rewrites, and whether the proxy asked about a page it `remembered`."""
    if method == "GET" and status == 200 and rewritable:
        return Answer.PAGE
    if status == 304 and remembered:
        return Answer.REMEMBERED_PAGE
    if method == "GET" and status in (404, 410):
        return Answer.GONE
    return Answer.PASSED_ON


async def _exchange(
    request: web.Request,
    *,
    target: Target,
    destination: Upstream,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
    fill: Fill | None = None,
) -> web.StreamResponse:
    """One request to the registry and its answer relayed. With `fill`, the destination is
    a file with a known hash: fetched whole and checked (`cachedfiles`)."""
    body = request.content if request.body_exists else None
    page_key, known = _known_page(request, target, destination, client_base, resources.pages)
    headers = _request_headers(request, target, destination, known if fill is None else None)
    if fill is not None:
        headers = cachedfiles.upstream_headers(headers, fill.cache, fill.key)
    # An upload's headers come only after the client's whole body: the silence timeout
    # bounds the wait after it, as the first-byte timeout does for everything else. The
    # silence timeout covers the wait for the first byte too, so a first-byte timeout no
    # shorter than it needs no timer of its own.
    first_byte = settings.first_byte_timeout_seconds
    bounded = body is None and first_byte < settings.idle_timeout_seconds
    async with asyncio.timeout(first_byte if bounded else None):
        upstream = await resources.session.request(
            request.method,
            yarl.URL(destination.url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=settings.client_timeout,
            ssl=target.tls if destination.url.startswith("https:") else True,
        )
    try:
        if upstream.status == 401 and destination.credentialed:
            raise RegistryRefused()
        if not 200 <= upstream.status <= 599:
            raise RegistryDataError(f"an answer with HTTP status {upstream.status}")
        if fill is not None:  # a file with a known hash: fetched whole and checked
            checked = await cachedfiles.relayed(
                request,
                upstream,
                _response_headers(request, upstream, target, client_base),
                fill,
                whole_body_bytes=settings.whole_body_bytes,
                chunk_bytes=settings.chunk_bytes,
                idle_timeout_seconds=settings.idle_timeout_seconds,
            )
            if checked is not None:
                return checked
            return await _passed_on(
                request,
                upstream,
                target=target,
                client_base=client_base,
                resources=resources,
                settings=settings,
            )
        kind = answer_kind(
            request.method,
            upstream.status,
            rewritable=target.protocol.is_rewritable(upstream.content_type),
            remembered=known is not None,
        )
        if kind in (Answer.PAGE, Answer.REMEMBERED_PAGE):
            page_context = pages.PageContext(
                target=target,
                client_base=client_base,
                key=page_key,
                known=known,
                pages=resources.pages,
                files=resources.files,
                shares=resources.shares,
                budget=resources.budget,
                max_index_bytes=settings.max_index_bytes,
                large_page_bytes=settings.large_page_bytes,
                idle_timeout_seconds=settings.idle_timeout_seconds,
            )
            if kind is Answer.REMEMBERED_PAGE and known is not None:
                return await pages.send_known(request, known, page_context)
            headers = _response_headers(request, upstream, target, client_base)
            return await pages.rewritten(request, upstream, headers, page_context)
        if kind is Answer.GONE and resources.files:
            resources.files.currency.page_gone(target.cache_scope, destination.url)
        return await _passed_on(
            request,
            upstream,
            target=target,
            client_base=client_base,
            resources=resources,
            settings=settings,
        )
    finally:
        upstream.release()


async def _passed_on(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    *,
    target: Target,
    client_base: str,
    resources: Resources,
    settings: ForwardSettings,
) -> web.StreamResponse:
    """The registry's answer as it is: small bodies whole, others streamed or spliced."""
    headers = _response_headers(request, upstream, target, client_base)
    if _small(request, upstream, settings):
        with resources.budget.holding(target.connector.namespace) as held:
            if held.try_take(upstream.content_length or 0):
                return await _whole(request, upstream, headers, settings)
    return await _streamed(request, upstream, headers, settings, resources.relays)


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
    except aiohttp.ClientPayloadError as exc:
        raise RegistryTruncated() from exc
    response = web.Response(
        status=upstream.status, reason=upstream.reason, body=body, headers=headers
    )
    return await sending.send_whole(request, response, len(body), settings.idle_timeout_seconds)


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
    if relays is not None and splice.spliceable(request, upstream) and relays.try_reserve():
        try:
            return await splice.relay_rest(
                request,
                upstream,
                response,
                relays,
                idle_timeout_seconds=settings.idle_timeout_seconds,
                otherwise=lambda: _stream_rest(request, upstream, response, settings),
            )
        finally:
            relays.release()
    return await _stream_rest(request, upstream, response, settings)


async def _stream_rest(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    settings: ForwardSettings,
) -> web.StreamResponse:
    async for chunk in sending.upstream_chunks(request, upstream, settings.chunk_bytes):
        # A client that went away raises ConnectionError here: the audit line says 499.
        await sending.write(request, response, chunk, settings.idle_timeout_seconds)
    if request.get(UPSTREAM_ERROR) != "truncated":
        await response.write_eof()
    return response

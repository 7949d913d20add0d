"""Index pages: read, rewritten, remembered, and revalidated with the registry.

Every request for an index page reaches the registry: there is no time-to-live, so an
upload (through the proxy or not) shows on the next page at once. What the proxy saves is
the work around it. It remembers the last answer for each page as the client asked for it
(connector, URL, the client's base and Accept): with the registry's validators (`ETag`,
`Last-Modified`) the next request is conditional, and a 304 is answered from memory; without
them, a page whose bytes hash as before reuses its rewrite, which costs far more than the
hash.

A page is read whole, bounded by its decoded size and by the tenant's byte budget, and a
large one waits for one of its namespace's rewrite slots before more of it is read: a
compression bomb costs CPU before it is found out, and small pages, the common case, never
wait. Work on one page yields to the event loop every couple of milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterator

import aiohttp
from aiohttp import web

from connectors.api.errors import RegistryDataError
from connectors.proxy import currency, memory, sending
from connectors.proxy import headers as header_policy
from connectors.proxy.decoding import BoundedDecoder
from connectors.proxy.fairness import ByteBudget, Holding, Shares
from connectors.proxy.filecache import FileCache
from connectors.proxy.targets import Target

# Seconds between two yields to the event loop while a large page is decoded or rewritten.
_SLICE_SECONDS = 0.002
# Request headers that make the client's request conditional: with any of them the client
# validates its own copy, and the registry's answer goes to it as it is.
CLIENT_CONDITIONS = ("if-none-match", "if-modified-since", "if-match", "if-unmodified-since")

Key = tuple[Hashable, str, str, str]


@dataclasses.dataclass
class Page:
    """The last answer for one page, as one client base and Accept got it."""

    digest: bytes  # of the registry's decoded body
    content_type: str
    headers: dict[str, str]  # for the client, without Date
    body: bytes | bytearray  # rewritten; never changed once stored
    validators: dict[str, str]  # request headers that revalidate it; empty if none


class PageCache:
    """Pages by (connector's link map, page URL, client base, Accept), least recently
    used first out once they hold `max_bytes`."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._pages: OrderedDict[Key, Page] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # answers that reused a rewrite (revalidated or same bytes)
        self.misses = 0

    @staticmethod
    def key(link_map: Hashable, page_url: str, client_base: str, accept: str) -> Key:
        """`link_map` is the connector's (frozen, so equal maps rewrite equally)."""
        return (link_map, page_url, client_base, accept)

    def get(self, key: Key) -> Page | None:
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, key: Key, page: Page) -> None:
        previous = self._pages.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous.body)
        if len(page.body) > self.max_bytes // 4:
            return  # one huge page must not evict everything else
        self._pages[key] = page
        self._bytes += len(page.body)
        while self._bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= len(evicted.body)


@dataclasses.dataclass(frozen=True)
class PageContext:
    """What answering one page needs beyond the request and the registry's answer."""

    target: Target
    client_base: str
    key: Key
    known: Page | None  # the page as last answered, if remembered
    pages: PageCache
    files: FileCache | None
    shares: Shares
    budget: ByteBudget
    max_index_bytes: int
    large_page_bytes: int
    idle_timeout_seconds: float


async def send_known(request: web.Request, page: Page, context: PageContext) -> web.Response:
    """Answer from memory after the registry said the page has not changed (304)."""
    context.pages.hits += 1
    if context.files is not None:
        context.files.currency.page_naming(
            context.target.cache_scope, context.key[1], changed=False
        )
    response = web.Response(status=200, body=page.body, headers=page.headers)
    return await sending.send_whole(request, response, len(page.body), context.idle_timeout_seconds)


async def rewritten(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    context: PageContext,
) -> web.StreamResponse:
    """Read, rewrite and send an index page, holding its bytes in the tenant's budget until
    the client has them all."""
    encoding = next((headers.pop(k) for k in list(headers) if k.lower() == "content-encoding"), "")
    decoder = BoundedDecoder(encoding, context.max_index_bytes)
    target = context.target
    namespace = target.connector.namespace
    slicer = _Slicer()
    async with contextlib.AsyncExitStack() as large:
        with context.budget.holding(namespace) as held:
            body = bytearray()
            digest = hashlib.blake2b(digest_size=16)
            slotted = False
            async for chunk in upstream.content.iter_any():
                for piece in decoder.feed(chunk):
                    await _append(body, piece, digest, held, slicer)
                    if not slotted and len(body) > context.large_page_bytes:
                        await large.enter_async_context(context.shares.rewrite_slot(namespace))
                        large.callback(memory.release_soon)  # once its buffers are gone
                        slotted = True
            for piece in decoder.finish():
                await _append(body, piece, digest, held, slicer)
            content_type = upstream.content_type
            known = context.known
            files = context.files
            if (
                known is not None
                and known.digest == digest.digest()
                and known.content_type == content_type
            ):
                context.pages.hits += 1
                page = dataclasses.replace(
                    known, validators=header_policy.validators(upstream.headers)
                )
                if files is not None:
                    files.currency.page_naming(target.cache_scope, context.key[1], changed=False)
            else:
                context.pages.misses += 1
                named: collections.deque[str] = collections.deque(
                    maxlen=currency.MAX_NAMED_PER_PAGE
                )

                def to_client(url: str, sha256: str | None) -> str | None:
                    offered = sha256 if files is not None else None
                    mapped = target.link_map.to_client(url, context.client_base, offered)
                    if mapped is not None and offered is not None:
                        named.append(offered)
                    return mapped

                out = await _joined(
                    target.protocol.rewrite(body, content_type, str(upstream.url), to_client),
                    held,
                    slicer,
                    limit=2 * context.max_index_bytes,
                )
                page = Page(
                    digest=digest.digest(),
                    content_type=content_type,
                    headers={k: v for k, v in headers.items() if k.lower() != "date"},
                    body=out,
                    validators=header_policy.validators(upstream.headers),
                )
                if files is not None:
                    # What the page named before is no longer current; what it names now is.
                    naming = files.currency.page_naming(
                        target.cache_scope, context.key[1], changed=True
                    )
                    files.currency.named(namespace, target.cache_scope, named, naming)
            del body
            context.pages.put(context.key, page)
            response = web.Response(
                status=upstream.status, reason=upstream.reason, body=page.body, headers=headers
            )
            return await sending.send_whole(
                request, response, len(page.body), context.idle_timeout_seconds
            )


class _Slicer:
    """Yields to the event loop once a slice of time has gone into one request's work."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()

    async def pause(self) -> None:
        if self.loop.time() - self.since >= _SLICE_SECONDS:
            await asyncio.sleep(0)
            self.since = self.loop.time()


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

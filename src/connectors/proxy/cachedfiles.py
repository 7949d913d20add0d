"""Package files answered from the cache of files, or fetched once and kept there.

The token has been checked before anything here runs. A request reaches this module only
for a link an index page advertised a sha256 for (`links.SHA256_PREFIX`), and then every
answer of the registry to a GET is checked against that hash: the registry is asked for
the whole file (the client's `Range` and conditions stay at the proxy, which answers them
from verified bytes or ignores them, as RFC 9110 allows), a status other than 200 among the
2xx is refused, and the bytes are never taken for an index page.

On a miss the registry's answer streams to the client while it is hashed (and, if the cache
takes it, written); the last piece is held back until the hash is known, so a file whose
bytes do not match never reaches a client whole: a small one becomes a 502, a streamed one
a connection reset before its end. An entry that is no longer current is revalidated with
the validators the registry gave for it (a 304 serves it from disk). Requests for an entry
whose fetch is under way wait for it while it makes progress, then read the entry; `HEAD`
never waits. Cached files answer `HEAD`, one `Range` (anything else gets the whole file),
`If-Range` and `If-None-Match` against the content's own ETag.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import BinaryIO

import aiohttp
from aiohttp import web

from connectors.api.errors import DigestMismatch, RegistryDataError, RegistryTruncated
from connectors.proxy import headers as header_policy
from connectors.proxy import sending
from connectors.proxy.filecache import FileCache, Fill, Key

log = logging.getLogger(__name__)

# Request headers that ask for part of a file, or for it only if it changed: never sent
# upstream for a file with a known hash, which is always fetched whole and checked.
PARTIAL_OR_CONDITIONAL = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"}
)
# The audit line's and the metrics' name for how a cacheable request was answered: hit
# (from disk), revalidated (from disk after a 304), miss (fetched and kept), refetch
# (fetched again for an entry that was not current), bypass (fetched, checked, not kept).
CACHE_RESULT = web.RequestKey("cache_result", str)
# Body bytes of a cacheable file read from the registry, whether or not they were kept.
CACHE_FETCHED_BYTES = web.RequestKey("cache_fetched_bytes", int)
# A wait for another request's fetch ends when that fetch has made no progress this long:
# the waiter then fetches for itself, so a slow first client slows no one else for long.
_STALL_SECONDS = 5.0
_ZERO_SUFFIX = re.compile(r"bytes=-0+", re.IGNORECASE)


async def from_cache(
    request: web.Request,
    files: FileCache,
    key: Key,
    namespace: str,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse | None:
    """The answer from the cache if the entry may be served now; None if the registry
    must be asked. Waits for a fetch of the same entry under way rather than starting
    another, and uses its result."""
    confirmed = False
    while True:
        entry = files.lookup(key)
        if (
            entry is not None
            and (confirmed or files.currency.is_current(namespace, key))
            and await files.verified(key)
        ):
            served = await _serve(
                request,
                files,
                key,
                entry.size,
                whole_body_bytes=whole_body_bytes,
                chunk_bytes=chunk_bytes,
                idle_timeout_seconds=idle_timeout_seconds,
            )
            if served is not None:
                request.setdefault(CACHE_RESULT, "hit")
                return served
            continue  # gone from the disk meanwhile (cleared): forgotten, look again
        fill = files.filling(key)
        if fill is None or request.method == "HEAD":
            return None
        if not await _waited(request, fill):
            return None
        confirmed = fill.confirmed


async def _waited(request: web.Request, fill: Fill) -> bool:
    """Wait for another request's fetch to end; False if it stalls first."""
    seen, since = fill.size, asyncio.get_running_loop().time()
    while True:
        try:
            await asyncio.wait_for(fill.ended.wait(), timeout=1.0)
        except TimeoutError:
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client left while waiting") from None
            now = asyncio.get_running_loop().time()
            if fill.size != seen:
                seen, since = fill.size, now
            elif now - since >= _STALL_SECONDS:
                return False
        else:
            return True


def upstream_headers(headers: dict[str, str], files: FileCache, key: Key) -> dict[str, str]:
    """The request headers for fetching a file with a known hash: whole, and conditional
    only on the validators of a cached entry."""
    plain = {k: v for k, v in headers.items() if k.lower() not in PARTIAL_OR_CONDITIONAL}
    entry = files.lookup(key)
    if entry is not None:
        plain.update(entry.validators)
    return plain


def flight(files: FileCache, key: Key) -> Fill:
    """This request's fetch of `key`: registered, so that others wait for it, unless one
    is under way already (this request gave up waiting on it), then only a check."""
    return files.start_flight(key) or Fill(files, key)


async def relayed(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    fill: Fill,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse | None:
    """The answer to a GET for a file with a known hash, checked; None for an answer that
    is not the file (an error or a redirect), to be relayed as it is."""
    files, key = fill.cache, fill.key
    if upstream.status == 304 and files.lookup(key) is not None:
        fill.revalidated()  # requests waiting on this key may now read the entry
        if await files.verified(key):
            request[CACHE_RESULT] = "revalidated"
            entry = files.lookup(key)
            served = await _serve(
                request,
                files,
                key,
                entry.size if entry is not None else 0,
                whole_body_bytes=whole_body_bytes,
                chunk_bytes=chunk_bytes,
                idle_timeout_seconds=idle_timeout_seconds,
            )
            if served is not None:
                return served
        raise RegistryDataError("it said a file is unchanged that the proxy no longer holds")
    if not 200 <= upstream.status < 300:
        return None
    if upstream.status != 200:
        raise RegistryDataError(f"it answered HTTP {upstream.status} for a whole file")
    had_entry = files.lookup(key) is not None
    fill.begin(upstream.content_length, header_policy.validators(upstream.headers))
    request[CACHE_RESULT] = "miss" if fill.keeps else "refetch" if had_entry else "bypass"
    try:
        return await _checked(
            request,
            upstream,
            headers,
            fill,
            whole_body_bytes=whole_body_bytes,
            chunk_bytes=chunk_bytes,
            idle_timeout_seconds=idle_timeout_seconds,
        )
    finally:
        request[CACHE_FETCHED_BYTES] = fill.size


async def _checked(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    fill: Fill,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse:
    length = upstream.content_length
    if length is not None and length <= whole_body_bytes:
        try:
            body = await upstream.read()
        except aiohttp.ClientPayloadError as exc:
            raise RegistryTruncated() from exc
        fill.write(body)
        if not _ended_well(request, fill):
            raise DigestMismatch()
        whole = web.Response(status=200, body=body, headers=headers)
        return await sending.send_whole(request, whole, len(body), idle_timeout_seconds)
    response = web.StreamResponse(status=200, headers=headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    held = b""
    async for chunk in sending.upstream_chunks(request, upstream, chunk_bytes):
        fill.write(chunk)
        if held:
            await sending.write(request, response, held, idle_timeout_seconds)
        held = chunk
    if request.get(sending.UPSTREAM_ERROR) == "truncated":
        return response  # the client's connection is already reset
    if not _ended_well(request, fill):
        sending.drop_client(request, "was being sent a file that failed its sha256 check")
        return response
    if held:
        await sending.write(request, response, held, idle_timeout_seconds)
    await response.write_eof()
    return response


def _ended_well(request: web.Request, fill: Fill) -> bool:
    """Finish the fetch; note and log a mismatch."""
    if fill.finish():
        return True
    request[sending.UPSTREAM_ERROR] = "mismatch"
    log.warning(
        "the registry sent a file whose sha256 (%s) is not %s, the one its index advertised",
        fill.digest(),
        fill.key[1],
    )
    return False


async def _serve(
    request: web.Request,
    files: FileCache,
    key: Key,
    size: int,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse | None:
    """The cached file as the request asks for it; None if it has gone from the disk."""
    try:
        file = files.path(key).open("rb")  # opened before any await: eviction can wait
    except FileNotFoundError:
        files.forget(key)  # cleared by `connectors cache clear`
        return None
    with file:
        return await _send_file(
            request,
            file,
            size,
            key[1],
            whole_body_bytes=whole_body_bytes,
            chunk_bytes=chunk_bytes,
            idle_timeout_seconds=idle_timeout_seconds,
        )


async def _send_file(
    request: web.Request,
    file: BinaryIO,
    size: int,
    sha256: str,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse:
    etag = f'"sha256-{sha256}"'
    headers = {"Content-Type": "application/octet-stream", "ETag": etag, "Accept-Ranges": "bytes"}
    if _none_match(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    wanted = _wanted_range(request, size, etag)
    if wanted is None:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    start, stop = wanted
    status = 200
    if (start, stop) != (0, size):
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    length = stop - start
    file.seek(start)
    if length <= whole_body_bytes and request.method != "HEAD":
        body = file.read(length)
        whole = web.Response(status=status, body=body, headers=headers)
        return await sending.send_whole(request, whole, len(body), idle_timeout_seconds)
    streamed = web.StreamResponse(status=status, headers=headers)
    streamed.content_length = length
    await streamed.prepare(request)
    remaining = length if request.method != "HEAD" else 0
    while remaining:
        # Local reads from the page cache: shorter than any wait they would be moved off for.
        chunk = file.read(min(chunk_bytes, remaining))
        if not chunk:
            sending.drop_client(request, "was being sent a cached file that shrank")
            return streamed
        remaining -= len(chunk)
        await sending.write(request, streamed, chunk, idle_timeout_seconds)
    await streamed.write_eof()
    return streamed


def _none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names this entity (weak comparison, RFC 9110 13.1.2)."""
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _wanted_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    """(start, stop) of the bytes to send; None if the range cannot be satisfied."""
    if_range = request.headers.get("If-Range")
    if "Range" not in request.headers or (if_range is not None and if_range != etag):
        return 0, size
    try:
        wanted = request.http_range
    except ValueError:
        return 0, size  # a form this server does not take: the whole file, as RFC 9110 allows
    if _ZERO_SUFFIX.fullmatch(request.headers["Range"].strip()):
        return None  # the last zero bytes: nothing to satisfy (RFC 9110 14.1.2)
    start = wanted.start or 0
    if start < 0:
        start = max(0, size + start)
    stop = size if wanted.stop is None else min(wanted.stop, size)
    if start >= size or start >= stop:
        return None
    return start, stop

"""Package files answered from the cache of files, or fetched once and kept there.

The token has been checked before anything here runs. A request reaches this module only
for a link an index page advertised a sha256 for (`links.SHA256_PREFIX`); `filecache` says
when an entry may be served. On a miss the registry's answer streams to the client while
it is written to the cache and hashed; the last piece is held back until the hash is
known, so a file whose bytes do not match its advertised hash never reaches a client
whole: a small one becomes a 502, a streamed one a connection closed before its end.
Cached files answer `HEAD`, `Range` (one range; anything else gets the whole file) and
`If-None-Match` on the content's own ETag.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

import aiohttp
from aiohttp import web

from connectors.proxy import sending
from connectors.proxy.filecache import FileCache, Fill, Key, Naming

log = logging.getLogger(__name__)

# Request headers that ask for less than the whole file, or only if it changed: a miss
# with any of them is forwarded as it is, without filling the cache.
PARTIAL_OR_CONDITIONAL = ("range", "if-range", "if-none-match", "if-modified-since")
# The audit line's and the metrics' name for how a cacheable request was answered.
CACHE_RESULT = "connectors.cache_result"
# Body bytes of a cacheable file read from the registry, whether or not they were kept.
CACHE_FETCHED_BYTES = "connectors.cache_fetched_bytes"


async def from_cache(
    request: web.Request,
    files: FileCache,
    key: Key,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse | None:
    """The answer from the cache if the entry may be served; None if the registry must
    be asked. Waits for a fill of the same entry under way rather than starting another."""
    while True:
        size = files.lookup(key)
        if size is not None and files.is_current(key) and await files.verified(key):
            try:
                file = files.path(key).open("rb")  # open before any await: eviction can wait
            except FileNotFoundError:
                files.forget(key)  # cleared by `connectors cache clear`
                continue
            with file:
                request[CACHE_RESULT] = "hit"
                return await _send_file(
                    request,
                    file,
                    size,
                    key[1],
                    whole_body_bytes=whole_body_bytes,
                    chunk_bytes=chunk_bytes,
                    idle_timeout_seconds=idle_timeout_seconds,
                )
        ended = files.filling(key)
        if ended is None:
            return None
        await ended.wait()


def wants_fill(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    return (
        request.method == "GET"
        and upstream.status == 200
        and not any(h in request.headers for h in PARTIAL_OR_CONDITIONAL)
    )


async def filled(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    files: FileCache,
    key: Key,
    *,
    whole_body_bytes: int,
    chunk_bytes: int,
    idle_timeout_seconds: float,
) -> web.StreamResponse:
    """Relay the registry's 200 for a file whose sha256 is known, keeping it if it is new.
    An entry that exists but was not current is only checked against its hash."""
    fill = None if files.lookup(key) is not None else files.start_fill(key, upstream.content_length)
    check = fill or Fill.checker(key)
    request[CACHE_RESULT] = "miss" if fill is not None else "refetch"
    try:
        length = upstream.content_length
        if length is not None and length <= whole_body_bytes:
            try:
                body = await upstream.read()
            except aiohttp.ClientPayloadError:
                request[sending.UPSTREAM_ERROR] = "truncated"
                return sending.error_response(
                    502, "the registry's answer ended before its declared length"
                )
            check.write(body)
            if not _ended_well(request, check, key):
                return sending.error_response(
                    502, "the registry sent a file whose sha256 is not the one its index advertised"
                )
            files.named(key[0], (key[1],), Naming(files.now()))
            whole = web.Response(status=200, body=body, headers=headers)
            return await sending.send_whole(request, whole, len(body), idle_timeout_seconds)
        response = web.StreamResponse(status=200, headers=headers)
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        held = b""
        chunks = upstream.content.iter_chunked(chunk_bytes)
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                request[sending.UPSTREAM_ERROR] = "truncated"
                log.warning("upstream body ended early (%s)", exc.__class__.__name__)
                sending.drop_client(request, "was being sent a body the registry cut short")
                return response
            check.write(chunk)
            if held:
                await sending.write(request, response, held, idle_timeout_seconds)
            held = chunk
        if not _ended_well(request, check, key):
            sending.drop_client(request, "was being sent a file that failed its sha256 check")
            return response
        files.named(key[0], (key[1],), Naming(files.now()))
        if held:
            await sending.write(request, response, held, idle_timeout_seconds)
        await response.write_eof()
        return response
    finally:
        request[CACHE_FETCHED_BYTES] = check.size
        if fill is not None and not fill.ended:
            fill.abandon()


def _ended_well(request: web.Request, check: Fill, key: Key) -> bool:
    """Commit the fill if its bytes hash to the key; note the failure if not."""
    if check.commit():
        return True
    request[sending.UPSTREAM_ERROR] = "mismatch"
    log.warning(
        "the registry sent a file whose sha256 (%s) is not %s, the one its index advertised",
        check.digest(),
        key[1],
    )
    return False


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
    if etag in request.headers.get("If-None-Match", ""):
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


def _wanted_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    """(start, stop) of the bytes to send; None if the range cannot be satisfied."""
    if_range = request.headers.get("If-Range")
    if "Range" not in request.headers or (if_range is not None and if_range != etag):
        return 0, size
    try:
        wanted = request.http_range
    except ValueError:
        return 0, size  # a form this server does not take: the whole file, as RFC 9110 allows
    start = wanted.start or 0
    if start < 0:
        start = max(0, size + start)
    stop = size if wanted.stop is None else min(wanted.stop, size)
    if start >= size or start >= stop:
        return None
    return start, stop

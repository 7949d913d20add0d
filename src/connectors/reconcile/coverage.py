"""Whether a PyPI connector's index pages keep downloads on the proxy.

A registry may link its files to a host the connector does not cover (a CDN, another
registry): the proxy leaves such links alone, and clients then fetch those files
directly, around the proxy. The reconciler says so in the `LinksCovered` condition, from
a small, bounded look: the registry's simple index (its first 256 KiB), the first
project it lists, and that project's page (its first 2 MiB), each asked once per
reconcile pass with the connector's credentials, on its own host only, redirects not
followed. Covered: the connector's own host, and each address extension (its own or the
class's defaults).

A registry may also redirect a project it does not hold to another index (pypiserver does
so to PyPI unless started with --disable-fallback): clients follow, and install from the
internet what they meant to take from the registry. The look asks for one project no
registry holds and reports where such a redirect leads.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import secrets
import ssl
from contextlib import AbstractAsyncContextManager
from urllib.parse import urljoin, urlsplit

import aiohttp

from connectors.api import addresses
from connectors.registry.access import AddressExtension, BasicCredentials

MAX_INDEX_BYTES = 256 * 1024
MAX_PAGE_BYTES = 2 * 1024 * 1024
# Bounded attribute values, no nesting: linear over the bounded text.
_HREF = re.compile(rb"""href\s*=\s*["']([^"'<>\s]{1,4096})["']""", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Coverage:
    """What a look found: the page it read, and the hosts its links name that the
    connector does not cover (empty when all are). `page` is empty when nothing could be
    checked, and `why` says why."""

    page: str = ""
    uncovered: tuple[str, ...] = ()
    why: str = ""
    # Where the registry sends a client asking for a project it does not hold, when that
    # is off the hosts the connector covers: (the URL asked, the origin it redirects to).
    redirect: tuple[str, str] | None = None


def covered(url: str, address: str, extensions: list[AddressExtension]) -> bool:
    parts = urlsplit(url)
    if addresses.same_origin(parts, urlsplit(address)):
        return True
    return any(addresses.beneath(parts, urlsplit(e.url.rstrip("/"))) for e in extensions)


async def look(
    session: aiohttp.ClientSession,
    index_url: str,
    *,
    address: str,
    extensions: list[AddressExtension],
    credentials: BasicCredentials | None,
    tls: ssl.SSLContext,
    timeout_seconds: float,
) -> Coverage:
    read = functools.partial(
        _read, session, credentials=credentials, tls=tls, timeout_seconds=timeout_seconds
    )
    index = await read(index_url, MAX_INDEX_BYTES)
    if index is None:
        return Coverage(why="the simple index could not be read")
    absent = f"{index_url.rstrip('/')}/connectors-absent-{secrets.token_hex(4)}/"
    elsewhere = await _redirected(session, absent, credentials, tls, timeout_seconds)
    redirect = (
        (absent, _origin_text(elsewhere))
        if elsewhere and not covered(elsewhere, address, extensions)
        else None
    )
    projects = [urljoin(index_url, h.decode("ascii", "replace")) for h in _HREF.findall(index)]
    home = urlsplit(address)
    project = next((p for p in projects if addresses.same_origin(urlsplit(p), home)), None)
    if project is None:
        return Coverage(why="the simple index lists no project yet", redirect=redirect)
    page = await read(project, MAX_PAGE_BYTES)
    if page is None:
        return Coverage(why="the first project's page could not be read", redirect=redirect)
    files = {urljoin(project, h.decode("ascii", "replace")) for h in _HREF.findall(page)}
    hosts = {_origin_text(f) for f in files if not covered(f, address, extensions)}
    return Coverage(
        page=urlsplit(project).path,
        uncovered=tuple(sorted(h for h in hosts if h)),
        redirect=redirect,
    )


async def _redirected(
    session: aiohttp.ClientSession,
    url: str,
    credentials: BasicCredentials | None,
    tls: ssl.SSLContext,
    timeout_seconds: float,
) -> str | None:
    """The absolute URL a redirect answer to `url` points at, or None for any other answer."""
    try:
        async with _get(session, url, credentials, tls, timeout_seconds) as response:
            location = response.headers.get("Location", "")
            if not 300 <= response.status < 400 or not location:
                return None
            return urljoin(url, location[:4096])
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def _read(
    session: aiohttp.ClientSession,
    url: str,
    limit: int,
    *,
    credentials: BasicCredentials | None,
    tls: ssl.SSLContext,
    timeout_seconds: float,
) -> bytes | None:
    try:
        async with _get(session, url, credentials, tls, timeout_seconds) as response:
            if response.status != 200:
                return None
            body = b""
            while len(body) < limit and (chunk := await response.content.read(limit - len(body))):
                body += chunk
            return body
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


def _get(
    session: aiohttp.ClientSession,
    url: str,
    credentials: BasicCredentials | None,
    tls: ssl.SSLContext,
    timeout_seconds: float,
) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
    """One look at a page as a browser would ask for it, never following a redirect."""
    headers = {"Accept": "text/html"}
    if credentials is not None:
        headers["Authorization"] = credentials.authorization()
    return session.get(
        url, headers=headers, allow_redirects=False,
        ssl=tls if url.startswith("https:") else True,
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
    )  # fmt: skip


def _origin_text(url: str) -> str:
    """scheme://host[:port] for a condition to name: never the userinfo a link or a
    redirect may carry (a fallback URL with a mirror's password, say)."""
    scheme = urlsplit(url).scheme.lower()
    return addresses.origin(url) if scheme in ("http", "https") and urlsplit(url).netloc else ""

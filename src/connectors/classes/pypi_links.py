"""The pypi class's proxy behaviour: rewrite file links so downloads stay on the proxy.

Registries link to files in several ways: relative (`../../packages/x.whl`, pypiserver,
devpi, Nexus), root-relative (`/packages/x.whl`), or absolute to another host (PyPI's
files host). Every link is first resolved against the URL the page was fetched from, then
handed to `map_url`, which returns where the client should fetch it instead, or None to
leave the link as it was (a host the connector does not take over). Only the URL changes:
fragments (`#sha256=...`) and every other byte of the page (yanked, requires-python,
core-metadata, formatting) are kept as they were.

HTML (PEP 503) and JSON (PEP 691, and the JSON API's `urls`/`releases`) are handled.

A registry is untrusted, so the rewriters are scanners, not parsers: each step does a
bounded amount of work in time linear in the page (no backtracking regex over attacker
text, no recursion, no document tree), and `rewrite_steps` yields between steps so the
proxy can keep serving other clients while a large page is rewritten. A page that cannot
be read (an unterminated JSON string, a link no URL parser accepts) raises
RegistryDataError.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

from connectors.api.errors import RegistryDataError

UrlMapper = Callable[[str], str | None]

HTML_TYPES = frozenset({"text/html", "application/vnd.pypi.simple.v1+html"})
JSON_TYPES = frozenset({"application/vnd.pypi.simple.v1+json", "application/json"})

# Input bytes handled between two yields of `rewrite_steps`.
STEP_BYTES = 64 * 1024

# The start of an attribute that holds a URL to fetch: the file link itself and PEP 740's
# provenance. Bounded in length, so a search inside a window never misses one that starts
# there; only the value (found with bytes.find) may be long.
_URL_ATTRIBUTE_LEAD = re.compile(
    rb"""\s(?:href|data-provenance)[ \t\r\n\f]{0,16}=[ \t\r\n\f]{0,16}(?P<quote>["'])""",
    re.IGNORECASE,
)
_LEAD_MAX_BYTES = 64
_JSON_URL_KEYS = frozenset({"url", "provenance"})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_rewritable(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind in HTML_TYPES or kind in JSON_TYPES


Page = bytes | bytearray


def rewrite(body: Page, content_type: str | None, page_url: str, map_url: UrlMapper) -> bytes:
    """The body with every file link mapped; unchanged if the type is not an index page."""
    return b"".join(rewrite_steps(body, content_type, page_url, map_url))


def rewrite_steps(
    body: Page, content_type: str | None, page_url: str, map_url: UrlMapper
) -> Iterator[Page]:
    """The rewritten body in pieces, each after a bounded amount of work."""
    kind = media_type(content_type)
    if kind in HTML_TYPES:
        return _html_pieces(body, page_url, map_url)
    if kind in JSON_TYPES:
        return _json_pieces(body, page_url, map_url)
    return iter((bytes(body),))


def _mapped(page_url: str, link: str, map_url: UrlMapper) -> str | None:
    try:
        return map_url(urljoin(page_url, link))
    except ValueError as exc:  # urljoin/urlsplit refuse some hosts, e.g. "http://[::1"
        raise RegistryDataError(f"the index page has a link no URL parser accepts: {exc}") from exc


def _html_pieces(body: Page, page_url: str, map_url: UrlMapper) -> Iterator[Page]:
    emitted = 0  # body[:emitted] has been yielded
    scan = 0
    no_closing: set[int] = set()  # quote characters with no closing one left in the page
    while scan < len(body):
        window_end = min(len(body), scan + STEP_BYTES)
        # A lead that starts inside the window ends within _LEAD_MAX_BYTES past it.
        lead = _URL_ATTRIBUTE_LEAD.search(body, scan, window_end + _LEAD_MAX_BYTES)
        if lead is None:
            scan = window_end
            yield body[emitted:scan]
            emitted = scan
            continue
        quote = body[lead.end() - 1]
        start = lead.end()
        end = -1 if quote in no_closing else body.find(bytes((quote,)), start)
        if end < 0:
            no_closing.add(quote)  # every later value in this quote is unterminated too
            if len(no_closing) == 2:
                break  # no value can close any more: nothing left to rewrite
            scan = start
            yield b""  # a bounded step all the same
            continue
        original = html.unescape(body[start:end].decode("utf-8", errors="surrogateescape"))
        mapped = _mapped(page_url, original, map_url)
        if mapped is not None:
            yield body[emitted:start]
            yield html.escape(mapped, quote=True).encode("utf-8")
            emitted = end
        scan = end + 1
    yield body[emitted:]


def _json_pieces(body: Page, page_url: str, map_url: UrlMapper) -> Iterator[Page]:
    """Every string token is read whole from its opening quote, so a key is only ever
    taken for a key: `"url"` inside another string cannot start a token."""
    emitted = 0
    position = 0
    url_value_next = False  # the last token was a key naming a URL, then a colon
    since_yield = 0
    while True:
        opening = body.find(b'"', position)
        if opening < 0:
            break
        closing = _string_end(body, opening)
        between = body[position:opening].strip()
        token = body[opening : closing + 1]
        if url_value_next and between == b":":
            replacement = _mapped_json_string(token, page_url, map_url)
            if replacement is not None:
                yield body[emitted:opening]
                yield replacement
                emitted = closing + 1
            url_value_next = False
        else:
            url_value_next = _is_url_key(body, token, closing)
        position = closing + 1
        since_yield += len(token) + len(between)
        if since_yield >= STEP_BYTES:
            yield body[emitted:position]
            emitted, since_yield = position, 0
    yield body[emitted:]


def _string_end(body: Page, opening: int) -> int:
    """The index of the quote that closes the JSON string opened at `opening`."""
    search = opening + 1
    while True:
        closing = body.find(b'"', search)
        if closing < 0:
            raise RegistryDataError("the JSON index page has an unterminated string")
        backslashes = 0
        while body[closing - 1 - backslashes] == 0x5C:  # "\\"
            backslashes += 1
        if backslashes % 2 == 0:
            return closing
        search = closing + 1


def _is_url_key(body: Page, token: Page, closing: int) -> bool:
    if len(token) > 16:
        return False
    after = closing + 1
    while after < len(body) and body[after] in b" \t\r\n":
        after += 1
    if after >= len(body) or body[after] != 0x3A:  # ":"
        return False
    return _decoded_string(token) in _JSON_URL_KEYS


def _decoded_string(token: Page) -> str:
    try:
        value = json.loads(token)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryDataError("the JSON index page has a malformed string") from exc
    return value if isinstance(value, str) else ""


def _mapped_json_string(token: Page, page_url: str, map_url: UrlMapper) -> bytes | None:
    original = _decoded_string(token)
    mapped = _mapped(page_url, original, map_url)
    if mapped is None or mapped == original:
        return None
    return json.dumps(mapped, ensure_ascii=False).encode("utf-8")


def path_aliases(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Client path segments that mean another segment upstream.

    Clients always use `/simple/`; the registry's own segment is the `simplePath` param
    (devpi: `+simple`). Uploads to `/legacy/` (PyPI's upload path) go to the address root,
    where pypiserver, devpi and Nexus take them.
    """
    simple = params.get("simplePath", "simple").strip("/") or "simple"
    aliases = [("legacy", "")]
    if simple != "simple":
        aliases.insert(0, ("simple", simple))
    return tuple(aliases)

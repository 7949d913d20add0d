"""The pypi class's proxy behaviour: rewrite file links so downloads stay on the proxy.

Registries link to files in several ways: relative (`../../packages/x.whl`, pypiserver,
devpi, Nexus), root-relative (`/packages/x.whl`), or absolute to another host (PyPI's
files host). Every link is first resolved against the URL the page was fetched from, then
handed to `map_url` with the sha256 the page advertises for it (the `#sha256=` fragment in
HTML, the file's `hashes` in JSON; None when there is none), which returns where the client
should fetch it instead, or None to leave the link as it was (a host the connector does not
take over). Only the URL changes: fragments (`#sha256=...`) and every other byte of the
page (yanked, requires-python, core-metadata, formatting) are kept as they were.

HTML (PEP 503) and JSON (PEP 691, and the JSON API's `urls`/`releases`) are handled.

A registry is untrusted, so the rewriters are scanners, not parsers: each step does a
bounded amount of work in time linear in the page (no backtracking regex over attacker
text, no recursion, no document tree, no Python loop over single bytes; a link is at most
64 KiB and a JSON string at most 1 MiB), and `rewrite_steps` yields between steps so the
proxy can keep serving other clients while a large page is rewritten. A page that cannot
be read (an unterminated JSON string, a link no URL parser accepts) raises
RegistryDataError.
"""

from __future__ import annotations

import collections
import html
import json
import re
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import urljoin

from connectors.api.errors import RegistryDataError

# (absolute URL, the sha256 the page advertises for it or None) -> the client's URL or None
UrlMapper = Callable[[str, str | None], str | None]

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
# No package index needs longer ones; each is handled in one step, so each is bounded.
MAX_LINK_BYTES = 64 * 1024
MAX_STRING_BYTES = 1024 * 1024
# The rest of a JSON string after its opening quote, through its closing quote: runs of
# plain characters and escapes, which cannot overlap, so matching is linear.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_KEY_COLON = re.compile(rb"[ \t\r\n]{0,64}:")
_COLON_GAP = re.compile(rb"[ \t\r\n]{0,64}:[ \t\r\n]{0,64}")
_SHA256_FRAGMENT = re.compile(r"sha256=([0-9a-fA-F]{64})")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BRACES = re.compile(rb"[{}]")
# A file object sits at depth 2 of a PEP 691 page and its hashes at 3; deeper or denser
# structure is not an index's, and hashes are simply not collected from it.
_MAX_HASH_DEPTH = 16
_MAX_GAP_BRACES = 64
# Hashes kept from one JSON page, its last files': the proxy remembers no more per page.
MAX_HASHED_LINKS = 10_000


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


def _mapped(page_url: str, link: str, sha256: str | None, map_url: UrlMapper) -> str | None:
    try:
        return map_url(urljoin(page_url, link), sha256)
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
        if end - start > MAX_LINK_BYTES:
            raise RegistryDataError(f"a link longer than {MAX_LINK_BYTES} bytes")
        original = html.unescape(body[start:end].decode("utf-8", errors="surrogateescape"))
        mapped = _mapped(page_url, original, _fragment_sha256(original), map_url)
        if mapped is not None:
            yield body[emitted:start]
            yield html.escape(mapped, quote=True).encode("utf-8")
            emitted = end
        scan = end + 1
    yield body[emitted:]


def _json_pieces(body: Page, page_url: str, map_url: UrlMapper) -> Iterator[Page]:
    """Every string token is read whole from its opening quote, so a key is only ever
    taken for a key: `"url"` inside another string cannot start a token. A first pass
    finds each file's sha256, which PEP 691 puts beside its URL, before or after it."""
    hashes: collections.OrderedDict[bytes, str] = collections.OrderedDict()
    yield from _json_file_hashes(body, hashes)
    emitted = 0
    position = 0
    url_value_next = False  # the last token was a key naming a URL
    since_yield = 0
    while True:
        opening = body.find(b'"', position)
        if opening < 0:
            break
        closing = _string_end(body, opening)
        if url_value_next and _COLON_GAP.fullmatch(body, position, opening):
            token = body[opening : closing + 1]
            replacement = _mapped_json_string(token, hashes.get(bytes(token)), page_url, map_url)
            if replacement is not None:
                yield body[emitted:opening]
                yield replacement
                emitted = closing + 1
            url_value_next = False
        else:
            url_value_next = _is_url_key(body, opening, closing)
        since_yield += closing + 1 - position
        position = closing + 1
        if since_yield >= STEP_BYTES:
            yield body[emitted:position]
            emitted, since_yield = position, 0
    yield body[emitted:]


class _JsonObject:
    """What the hash pass keeps of one open JSON object."""

    __slots__ = ("opened_by", "sha256", "url")

    def __init__(self, opened_by: str | None) -> None:
        self.opened_by = opened_by  # the key whose value this object is
        self.url: bytes | None = None  # the raw token of its "url"
        self.sha256: str | None = None


def _json_file_hashes(body: Page, found: collections.OrderedDict[bytes, str]) -> Iterator[Page]:
    """Fill `found` with each file URL's raw JSON token and the sha256 in its object's
    `hashes`, yielding empty pieces between bounded steps. A URL named twice with two
    hashes gets none; structure no index has (deep nesting, runs of braces) ends the pass
    with what was found so far, since hashes only ever make caching possible."""
    objects: list[_JsonObject] = []
    value_of: str | None = None  # the key whose value comes next
    position = 0
    since_yield = 0
    while True:
        opening = body.find(b'"', position)
        gap_end = len(body) if opening < 0 else opening
        if not _structure(body, position, gap_end, objects=objects, value_of=value_of, found=found):
            return
        if opening < 0:
            return
        if gap_end > position and _BRACES.search(body, position, gap_end):
            value_of = None  # an object opened or closed: the key's value was that
        closing = _string_end(body, opening)
        token = body[opening : closing + 1]
        if _KEY_COLON.match(body, closing + 1) is not None:
            value_of = _decoded_string(token) if len(token) <= 16 else ""
        else:
            _take_value(objects, value_of, token)
            value_of = None
        since_yield += closing + 1 - position
        position = closing + 1
        if since_yield >= STEP_BYTES:
            yield b""
            since_yield = 0


def _structure(
    body: Page,
    start: int,
    end: int,
    *,
    objects: list[_JsonObject],
    value_of: str | None,
    found: collections.OrderedDict[bytes, str],
) -> bool:
    """Open and close the objects whose braces lie between two strings; False when the
    structure is not an index's."""
    if body.count(b"{", start, end) + body.count(b"}", start, end) > _MAX_GAP_BRACES:
        return False
    for brace in _BRACES.finditer(body, start, end):
        if brace.group() == b"{":
            if len(objects) >= _MAX_HASH_DEPTH:
                return False
            keyed = value_of is not None and _COLON_GAP.fullmatch(body, start, brace.start())
            objects.append(_JsonObject(value_of if keyed else None))
        elif objects:
            _close(objects, found)
        value_of = None
    return True


def _take_value(objects: list[_JsonObject], value_of: str | None, token: Page) -> None:
    if not objects:
        return
    if value_of == "url":
        objects[-1].url = bytes(token)
    elif value_of == "sha256" and objects[-1].opened_by == "hashes":
        digest = _decoded_string(token)
        if _SHA256_HEX.fullmatch(digest):
            objects[-1].sha256 = digest.lower()


def _close(objects: list[_JsonObject], found: collections.OrderedDict[bytes, str]) -> None:
    closed = objects.pop()
    if closed.opened_by == "hashes" and objects:
        objects[-1].sha256 = closed.sha256
    elif closed.url is not None and closed.sha256 is not None:
        known = found.setdefault(closed.url, closed.sha256)
        if known != closed.sha256:
            found[closed.url] = ""  # two hashes for one URL: trust neither
        if len(found) > MAX_HASHED_LINKS:
            found.popitem(last=False)  # the newest releases come last; keep those


def _fragment_sha256(link: str) -> str | None:
    found = _SHA256_FRAGMENT.fullmatch(link.partition("#")[2])
    return found.group(1).lower() if found else None


def _string_end(body: Page, opening: int) -> int:
    """The index of the quote that closes the JSON string opened at `opening`."""
    end = min(len(body), opening + 1 + MAX_STRING_BYTES + 1)
    found = _STRING_REST.match(body, opening + 1, end)
    if found is None:
        raise RegistryDataError(
            f"a JSON string that never ends, or is longer than {MAX_STRING_BYTES} bytes"
        )
    return found.end() - 1


def _is_url_key(body: Page, opening: int, closing: int) -> bool:
    if closing - opening > 16 or _KEY_COLON.match(body, closing + 1) is None:
        return False
    return _decoded_string(body[opening : closing + 1]) in _JSON_URL_KEYS


def _decoded_string(token: Page) -> str:
    try:
        value = json.loads(token)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryDataError("the JSON index page has a malformed string") from exc
    return value if isinstance(value, str) else ""


def _mapped_json_string(
    token: Page, sha256: str | None, page_url: str, map_url: UrlMapper
) -> bytes | None:
    if len(token) > MAX_LINK_BYTES:
        raise RegistryDataError(f"a link longer than {MAX_LINK_BYTES} bytes")
    original = _decoded_string(token)
    mapped = _mapped(page_url, original, sha256 or None, map_url)
    if mapped is None or mapped == original:
        return None
    return json.dumps(mapped, ensure_ascii=False).encode("utf-8")


def index_segment(params: Mapping[str, str]) -> str:
    """The registry's own path segment for the simple index: the `simplePath` param
    (devpi: `+simple`), `simple` when it is unset or empty. The proxy's aliases and the
    reconciler's look at the index both read it here."""
    return params.get("simplePath", "simple").strip("/") or "simple"


def path_aliases(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Client path segments that mean another segment upstream.

    Clients always use `/simple/`; the registry's own segment is the `simplePath` param
    (devpi: `+simple`). Uploads to `/legacy/` (PyPI's upload path) go to the address root,
    where pypiserver, devpi and Nexus take them.
    """
    simple = index_segment(params)
    aliases = [("legacy", "")]
    if simple != "simple":
        aliases.insert(0, ("simple", simple))
    return tuple(aliases)

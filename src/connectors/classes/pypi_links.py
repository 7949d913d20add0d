"""The pypi class's proxy behaviour: rewrite file links so downloads stay on the proxy.

Registries link to files in several ways: relative (`../../packages/x.whl`, pypiserver,
devpi, Nexus), root-relative (`/packages/x.whl`), or absolute to another host (PyPI's
files host). Every link is first resolved against the URL the page was fetched from, then
handed to `map_url`, which returns where the client should fetch it instead, or None to
leave the link as it was (a host the connector does not take over). Only the URL changes:
fragments (`#sha256=...`) and every other attribute (yanked, requires-python,
core-metadata) are kept byte for byte.

HTML (PEP 503) and JSON (PEP 691, and the JSON API's `urls`/`releases`) are handled.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

UrlMapper = Callable[[str], str | None]

HTML_TYPES = frozenset({"text/html", "application/vnd.pypi.simple.v1+html"})
JSON_TYPES = frozenset({"application/vnd.pypi.simple.v1+json", "application/json"})

# Attributes that hold a URL to fetch: the file link itself and PEP 740's provenance.
_URL_ATTRIBUTE = re.compile(
    rb"""(?P<lead>\s(?:href|data-provenance)\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')""",
    re.IGNORECASE,
)
_JSON_URL_KEYS = frozenset({"url", "provenance"})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_rewritable(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind in HTML_TYPES or kind in JSON_TYPES


def rewrite(body: bytes, content_type: str | None, page_url: str, map_url: UrlMapper) -> bytes:
    """The body with every file link mapped; unchanged if the type is not an index page."""
    kind = media_type(content_type)
    if kind in HTML_TYPES:
        return rewrite_html(body, page_url, map_url)
    if kind in JSON_TYPES:
        return rewrite_json(body, page_url, map_url)
    return body


def rewrite_html(body: bytes, page_url: str, map_url: UrlMapper) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        quote = b'"' if match.group("dq") is not None else b"'"
        raw = match.group("dq") if match.group("dq") is not None else match.group("sq")
        original = html.unescape(raw.decode("utf-8", errors="surrogateescape"))
        mapped = map_url(urljoin(page_url, original))
        if mapped is None:
            return match.group(0)
        escaped = html.escape(mapped, quote=True).encode("utf-8")
        return match.group("lead") + quote + escaped + quote

    return _URL_ATTRIBUTE.sub(replace, body)


def rewrite_json(body: bytes, page_url: str, map_url: UrlMapper) -> bytes:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body  # Not JSON after all: pass it on untouched rather than break it.
    changed = _rewrite_json_value(document, page_url, map_url)
    if not changed:
        return body
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _rewrite_json_value(value: Any, page_url: str, map_url: UrlMapper) -> bool:
    changed = False
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _JSON_URL_KEYS and isinstance(item, str):
                mapped = map_url(urljoin(page_url, item))
                if mapped is not None and mapped != item:
                    value[key] = mapped
                    changed = True
            else:
                changed = _rewrite_json_value(item, page_url, map_url) or changed
    elif isinstance(value, list):
        for item in value:
            changed = _rewrite_json_value(item, page_url, map_url) or changed
    return changed


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

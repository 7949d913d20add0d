"""Refuse request targets that could steer the proxy anywhere but the connector's registry.

Only origin-form targets (`/path?query`) are served. Anything that could change which
resource or which host is reached after decoding is refused outright rather than
normalised: dot segments (plain or percent-encoded), encoded slashes and backslashes,
backslashes, empty segments (`//host`), and control characters. Dot segments include
what some registries' servlet containers resolve to one: `..;params`, `.%20`, full-width
dots. A real client never sends these to a package index.

The Host header is limited to a host name's characters and length, since the proxy
writes it back into every rewritten link.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def unsafe_host_reason(host: str) -> str | None:
    """Why this Host header is refused, or None."""
    if _HOST.fullmatch(host) is None:
        return "the Host header must be a host name or address, with an optional port"
    return None


def _is_dot_segment(segment: str) -> bool:
    """`.` or `..`, also as servlet containers read them: parameters after `;` dropped,
    spaces trimmed, compatibility characters (full-width dots) folded."""
    if "." not in segment and segment.isascii():
        return False  # NFKC leaves ASCII alone: no dot, no dot segment (the common case)
    plain = unicodedata.normalize("NFKC", segment.split(";", 1)[0]).strip()
    return plain in (".", "..")


def unsafe_target_reason(raw_target: str) -> str | None:
    """Why this request target is refused, or None when it is safe to forward."""
    if not raw_target.startswith("/"):
        return "only origin-form request targets (starting with /) are accepted"
    path, _, query = raw_target.partition("?")
    if path.startswith("//") or "//" in path:
        return "empty path segments are not accepted"
    if "\\" in raw_target:
        return "backslashes are not accepted in the path"
    if _ENCODED_SEPARATOR.search(path):
        return "encoded slashes, backslashes and NUL are not accepted in the path"
    decoded = unquote(path)
    if any(_is_dot_segment(segment) for segment in decoded.split("/")):
        return "dot segments (. and ..) are not accepted in the path"
    if _CONTROL.search(decoded) or _CONTROL.search(unquote(query)):
        return "control characters are not accepted in the request target"
    return None

"""Refuse request targets that could steer the proxy anywhere but the connector's registry.

Only origin-form targets (`/path?query`) are served. Anything that could change which
resource or which host is reached after decoding is refused outright rather than
normalised: dot segments (plain or percent-encoded), encoded slashes and backslashes,
backslashes, empty segments (`//host`), and control characters. A real client never
sends these to a package index.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


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
    if any(segment in (".", "..") for segment in decoded.split("/")):
        return "dot segments (. and ..) are not accepted in the path"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded + unquote(query)):
        return "control characters are not accepted in the request target"
    return None

"""Find the token in a client's Authorization header.

Clients send the token as the password of HTTP Basic (pip, twine, uv: the username is only
for display and is ignored) or as a Bearer token. Anything else means "no token".
"""

from __future__ import annotations

import base64
import binascii

# Far larger than any real token; a bigger header is refused before decoding.
MAX_AUTHORIZATION_LENGTH = 16 * 1024


def token_from_authorization(header: str | None) -> str | None:
    """The token carried by an Authorization header value, or None when there is none."""
    if not header or len(header) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value if value.isascii() and value.isprintable() else None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep and password else None

"""Short-lived, audience-bound tokens from the standalone issuer.

A token names one proxy URL as its audience, so a token for one connector is worthless at
another. Lifetimes are bounded, at issue and again at verification: a leaked token is
useful for minutes, not forever, even one a buggy or stolen signer made to last.
Verification allows `LEEWAY_SECONDS` of clock skew on `exp`, `nbf` and `iat`.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Iterable, Sequence

import jwt

from connectors.api.errors import TokenError, UsageError
from connectors.auth.keys import KeyRing

ISSUER = "connectors-standalone"
ALGORITHM = "EdDSA"
# A client's token lives this long unless asked otherwise: standalone tokens, and the CSI
# driver's `token.expiration` (Alauda documents 30m).
DEFAULT_TTL_SECONDS = 30 * 60
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 24 * 60 * 60
LEEWAY_SECONDS = 5

SCOPE_DOWNLOAD = "download"
SCOPE_UPLOAD = "upload"
ALL_SCOPES = (SCOPE_DOWNLOAD, SCOPE_UPLOAD)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who presented a token, and until when the answer holds."""

    subject: str
    expires_at: float
    scopes: frozenset[str] = frozenset(ALL_SCOPES)
    pod: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


def issue(
    ring: KeyRing,
    *,
    audience: str | Sequence[str],
    subject: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    scopes: Iterable[str] = ALL_SCOPES,
    now: float | None = None,
) -> str:
    """Sign a token for `audience` (one, or several for a client that uses several
    connectors), valid for ttl_seconds (bounded to the allowed range)."""
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise TokenError(
            f"token lifetime {ttl_seconds}s is outside the allowed "
            f"{MIN_TTL_SECONDS}s to {MAX_TTL_SECONDS}s"
        )
    scope_list = sorted(set(scopes))
    unknown = set(scope_list) - set(ALL_SCOPES)
    if unknown or not scope_list:
        raise TokenError(f"scopes must be among {', '.join(ALL_SCOPES)}")
    issued = int(now if now is not None else time.time())
    key = ring.signer()
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": [audience] if isinstance(audience, str) else list(audience),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": secrets.token_urlsafe(12),
        "scope": " ".join(scope_list),
    }
    return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})


def verify(
    ring: KeyRing, token: str, *, audience: str, max_ttl_seconds: int = MAX_TTL_SECONDS
) -> Identity:
    """The identity in `token` if it was signed by `ring` for `audience`, is current, and
    was not made to live longer than `max_ttl_seconds`."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("the token is not a well-formed JWT") from exc
    kid = header.get("kid")
    public = ring.verifier(kid) if isinstance(kid, str) else None
    if public is None:
        raise TokenError("the token was not signed by this issuer (unknown key)")
    try:
        claims = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "nbf", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("the token has expired: request a new one") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("the token was issued for a different connector") from exc
    except jwt.PyJWTError as exc:
        raise TokenError(f"the token is not valid ({exc.__class__.__name__})") from exc
    lifetime = claims["exp"] - claims["iat"]
    if not isinstance(lifetime, int | float) or lifetime > max_ttl_seconds:
        raise TokenError(
            f"the token was made to live longer than the issuer's maximum of "
            f"{max_ttl_seconds}s: request a new one"
        )
    scopes = frozenset(str(claims.get("scope", "")).split())
    return Identity(subject=str(claims["sub"]), expires_at=float(claims["exp"]), scopes=scopes)


_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_GO_DURATION = re.compile(rf"(?:{_GO_PART.pattern})+")


def parse_duration(text: str) -> int:
    """Whole seconds in a duration: plain seconds (`600`) or Go's form, one or more
    number-unit pairs (`90s`, `30m`, `1h30m`, `1.5h`; units h, m, s, ms, us, ns)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if not _GO_DURATION.fullmatch(text):
        raise UsageError(f"cannot read duration {text!r}: use forms like 90s, 30m or 1h30m")
    total = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _GO_PART.findall(text))
    return int(total)

"""Decide whether a token may use a connector: one interface, one implementation per mode.

The proxy asks `authorize(token, audience=..., namespace=..., name=..., upload=...)` and gets
an Identity, or one of three errors it maps to HTTP: TokenError (401), PermissionDenied
(403), AuthUnavailable (503). Standalone mode verifies tokens from its local issuer; the
Kubernetes mode (TokenReview + SubjectAccessReview) implements the same protocol.

Decisions are cached by the SHA-256 of the token (never the token itself), briefly, and
never past the token's own expiry. No cached decision outlives a revocation: the standalone
authenticator drops its cache whenever the key ring's set of keys changes, so a token of
a retired key is refused as soon as the server sees the key gone.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Protocol

from connectors.api.errors import PermissionDenied, TokenError
from connectors.auth import tokens
from connectors.auth.keys import KeyRing


class Authenticator(Protocol):
    async def authorize(
        self, token: str, *, audience: str, namespace: str, name: str, upload: bool
    ) -> tokens.Identity: ...


# Seconds a decision on a token is reused (never past the token's expiry).
DEFAULT_DECISION_TTL_SECONDS = 10.0


class DecisionCache:
    """Identities by token hash and audience, each kept until min(ttl, token expiry)."""

    def __init__(
        self, ttl_seconds: float = DEFAULT_DECISION_TTL_SECONDS, max_entries: int = 10_000
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[bytes, str], tuple[float, tokens.Identity]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(token: str, audience: str) -> tuple[bytes, str]:
        return hashlib.sha256(token.encode()).digest(), audience

    def get(self, token: str, audience: str, now: float | None = None) -> tokens.Identity | None:
        key = self._key(token, audience)
        entry = self._entries.get(key)
        current = time.time() if now is None else now
        if entry is None or entry[0] <= current:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def clear(self) -> None:
        """Forget every decision (the authority they came from has changed)."""
        self._entries.clear()

    def put(
        self, token: str, audience: str, identity: tokens.Identity, now: float | None = None
    ) -> None:
        current = time.time() if now is None else now
        until = min(current + self.ttl_seconds, identity.expires_at)
        if until <= current:
            return
        key = self._key(token, audience)
        self._entries[key] = (until, identity)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class LocalAuthenticator:
    """Standalone mode: tokens signed by the local issuer, scoped by audience and scope."""

    def __init__(self, ring: KeyRing, cache: DecisionCache | None = None) -> None:
        self.ring = ring
        self.cache = cache or DecisionCache()
        self._generation = ring.generation

    async def authorize(
        self, token: str, *, audience: str, namespace: str, name: str, upload: bool
    ) -> tokens.Identity:
        if self.ring.generation != self._generation:  # keys were added or retired
            self._generation = self.ring.generation
            self.cache.clear()
        identity = self.cache.get(token, audience)
        if identity is None:
            identity = tokens.verify(self.ring, token, audience=audience)
            self.cache.put(token, audience, identity)
        needed = tokens.SCOPE_UPLOAD if upload else tokens.SCOPE_DOWNLOAD
        if needed not in identity.scopes:
            raise PermissionDenied(
                f"this token may not {needed} through connector {namespace}/{name}"
            )
        return identity


__all__ = ["Authenticator", "DecisionCache", "LocalAuthenticator", "TokenError"]

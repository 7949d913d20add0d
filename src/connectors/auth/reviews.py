"""TokenReviews asked on behalf of clients nobody has authenticated yet, bounded.

Anyone who reaches the proxy can send a token, and each unknown one would cost a request
to the API server. So, before any is asked: a token that is not shaped like a JWT, or
whose (unverified) claims name none of the accepted audiences or have expired, is refused at once; a
token refused recently is refused again from memory (by its SHA-256, briefly); the same
token asked about by many requests at once is reviewed once; and at most `concurrency`
reviews run at a time, a request waiting `wait_seconds` at most for its turn (then 503).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from connectors.api.errors import AuthUnavailable, TokenError
from connectors.auth import tokens
from connectors.auth.authenticator import DEFAULT_DECISION_TTL_SECONDS

MAX_TOKEN_BYTES = 8 * 1024
Review = Callable[[str, str], Awaitable[tokens.Identity]]


def unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT-shaped token, unverified; None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_BYTES:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


class BoundedReviews:
    def __init__(
        self,
        review: Review,
        *,
        refusal_ttl_seconds: float = DEFAULT_DECISION_TTL_SECONDS,
        concurrency: int = 32,
        wait_seconds: float = 5.0,
        max_refusals: int = 10_000,
        also_accepted: str | None = None,
    ) -> None:
        self._review = review
        self.also_accepted = also_accepted
        self.refusal_ttl_seconds = refusal_ttl_seconds
        self.wait_seconds = wait_seconds
        self.max_refusals = max_refusals
        self._turns = asyncio.Semaphore(concurrency)
        self._refused: OrderedDict[tuple[bytes, str], tuple[float, str]] = OrderedDict()
        self._pending: dict[tuple[bytes, str], asyncio.Future[tokens.Identity]] = {}
        self.asked = 0

    async def identity(self, token: str, audience: str) -> tokens.Identity:
        _precheck(token, (audience, self.also_accepted or audience))
        key = (hashlib.sha256(token.encode()).digest(), audience)
        refused = self._refused.get(key)
        if refused is not None and refused[0] > time.monotonic():
            raise TokenError(refused[1])
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tokens.Identity] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            identity = await self._ask(token, audience)
        except TokenError as exc:
            self._remember_refusal(key, str(exc))
            _fail(future, exc)
            raise
        except Exception as exc:
            _fail(future, exc)
            raise
        except BaseException:
            future.cancel()  # this request was cancelled; its waiters ask again
            raise
        else:
            future.set_result(identity)
            return identity
        finally:
            del self._pending[key]

    async def _ask(self, token: str, audience: str) -> tokens.Identity:
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._turns.acquire()
        except TimeoutError:
            raise AuthUnavailable("too many tokens are being checked right now") from None
        try:
            self.asked += 1
            return await self._review(token, audience)
        finally:
            self._turns.release()

    def _remember_refusal(self, key: tuple[bytes, str], message: str) -> None:
        self._refused[key] = (time.monotonic() + self.refusal_ttl_seconds, message)
        self._refused.move_to_end(key)
        while len(self._refused) > self.max_refusals:
            self._refused.popitem(last=False)


def _fail(future: asyncio.Future[tokens.Identity], exc: Exception) -> None:
    future.set_exception(exc)
    future.exception()  # marked as seen: waiters get their own copy, or there are none


def _precheck(token: str, accepted: tuple[str, str]) -> None:
    claims = unverified_claims(token)
    if claims is None:
        raise TokenError("the token is not a ServiceAccount token (a JWT)")
    audiences = claims.get("aud")
    listed = audiences if isinstance(audiences, list) else [audiences]
    if not any(audience in listed for audience in accepted):
        raise TokenError("the token was issued for a different connector")
    expires = claims.get("exp")
    if isinstance(expires, int | float) and expires < time.time() - tokens.LEEWAY_SECONDS:
        raise TokenError("the token has expired")

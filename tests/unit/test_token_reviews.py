"""TokenReviews asked for unauthenticated clients are bounded: junk never reaches the API
server, a refusal is remembered briefly, one token is reviewed once however many ask at
once, and only so many reviews run together."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from connectors.api.errors import AuthUnavailable, TokenError
from connectors.auth import tokens
from connectors.auth.reviews import BoundedReviews

AUDIENCE = "http://c-pypi.demo.svc.cluster.local"


def jwt_shaped(subject: str, audience: str = AUDIENCE, expires_in: float = 600) -> str:
    claims = {"sub": subject, "aud": [audience], "exp": time.time() + expires_in}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2lnbmF0dXJl"


class ApiServer:
    """Plays TokenReview: accepts tokens whose subject starts with "good"."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.asked = 0
        self.running = 0
        self.most_at_once = 0

    async def review(self, token: str, audience: str) -> tokens.Identity:
        self.asked += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        if ".eyJzdWIiOiAiZ29vZC" not in token:
            raise TokenError("the token is not valid for this connector")
        return tokens.Identity(subject="good", expires_at=time.time() + 60)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b",
        "a." + "x" * 9000 + ".c",
        jwt_shaped("x", audience="http://other"),
        jwt_shaped("x", expires_in=-600),
    ],
)
async def test_tokens_that_cannot_be_for_this_connector_never_reach_the_api_server(token: str):
    api = ApiServer()
    with pytest.raises(TokenError):
        await BoundedReviews(api.review).identity(token, AUDIENCE)
    assert api.asked == 0


async def test_a_refused_token_is_refused_from_memory_for_a_while():
    api, bad = ApiServer(), jwt_shaped("bad")
    checks = BoundedReviews(api.review, refusal_ttl_seconds=60)
    for _ in range(5):
        with pytest.raises(TokenError, match="not valid"):
            await checks.identity(bad, AUDIENCE)
    assert api.asked == 1


async def test_one_token_asked_by_many_at_once_is_reviewed_once():
    api = ApiServer(seconds=0.05)
    checks = BoundedReviews(api.review)
    good = jwt_shaped("good")
    found = await asyncio.gather(*(checks.identity(good, AUDIENCE) for _ in range(100)))
    assert {i.subject for i in found} == {"good"} and api.asked == 1


async def test_only_so_many_reviews_run_at_once_and_a_long_wait_is_a_503():
    api = ApiServer(seconds=0.2)
    checks = BoundedReviews(api.review, concurrency=4, wait_seconds=0.3)
    outcomes = await asyncio.gather(
        *(checks.identity(jwt_shaped(f"good-{i}"), AUDIENCE) for i in range(12)),
        return_exceptions=True,
    )
    assert api.most_at_once == 4
    assert any(isinstance(o, AuthUnavailable) for o in outcomes)
    assert sum(isinstance(o, tokens.Identity) for o in outcomes) >= 4

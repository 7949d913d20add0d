"""The empty upload that checks credentials a registry does not need for reading is sent
once per address and Secret, not on every reconcile pass, and never to an address whose
query or fragment could aim it elsewhere. Against a real HTTP server on port 0."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.reconcile import probes
from connectors.registry.access import BasicCredentials


@pytest.fixture
async def registry() -> AsyncIterator[tuple[str, list[str]]]:
    """A registry that refuses every upload for want of a file; returns its URL and the
    Authorization of each POST it saw."""
    seen: list[str] = []

    async def upload(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=400, text="no file")

    app = web.Application()
    app.router.add_post("/{tail:.*}", upload)
    async with TestServer(app) as server:
        yield str(server.make_url("/")), seen


async def test_an_upload_check_is_sent_once_per_address_and_credentials(
    registry: tuple[str, list[str]],
):
    url, seen = registry
    checks = probes.UploadChecks()
    alice, bob = BasicCredentials("alice", "pw-a"), BasicCredentials("bob", "pw-b")
    async with probes.probe_session() as session:

        async def check(credentials: BasicCredentials) -> int | None:
            outcome = await checks.outcome(
                session, url, credentials=credentials, tls=ssl.create_default_context(),
                timeout_seconds=5,
            )  # fmt: skip
            return outcome.status

        assert [await check(alice) for _ in range(3)] == [400, 400, 400]
        assert len(seen) == 1  # asked once, remembered after
        assert await check(bob) == 400  # a changed Secret is asked again
        assert len(seen) == 2
        checks.ttl_seconds = 0  # and so is every Secret once the memory is old
        assert await check(alice) == 400
        assert len(seen) == 3


def test_no_upload_check_goes_to_an_address_with_a_query_or_fragment():
    assert probes.upload_check_url("https://r.example/repo/") == "https://r.example/repo/"
    assert probes.upload_check_url("https://r.example/repo") == "https://r.example/repo/"
    for aimed in (
        "https://r.example/x?to=http://internal/",
        "https://r.example/x#frag",
        "http://r/?",
    ):
        assert probes.upload_check_url(aimed) is None

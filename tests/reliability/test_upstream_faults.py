"""A registry that stalls, resets, truncates or fails: the client is never handed a broken
file as whole, a stall ends in 504 within the configured timeout, errors pass through, and
other connectors are served normally meanwhile."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.standalone.localregistry import LocalRegistry
from tests.support import faulty, wire
from tests.support.faulty import FaultyRegistry
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.waiting import settled

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, pypi_registry: LocalRegistry
) -> Iterator[tuple[Standalone, FaultyRegistry]]:
    with faulty.faulty_registry() as bad:
        server = Standalone(tmp_path_factory.mktemp("faults"))
        server.write(
            "default", "c.yaml",
            secret_manifest("faulty-secret", faulty.USERNAME, faulty.PASSWORD),
            connector_manifest("faulty", bad.url, secret="faulty-secret"),
            secret_manifest("good-secret", pypi_registry.username, pypi_registry.password),
            connector_manifest("good", pypi_registry.url, secret="good-secret"),
        )  # fmt: skip
        server.start("--upstream-timeout", str(TIMEOUT))
        try:
            server.wait_ready("default", "faulty")
            server.wait_ready("default", "good")
            yield server, bad
        finally:
            server.stop()
        assert faulty.PASSWORD not in server.log_file.read_text()


def get(server: Standalone, name: str, path: str, timeout: float = 30) -> wire.Reply:
    token = server.token("default", name)
    return wire.request(
        "GET", server.connector_url("default", name) + path, headers=wire.basic(token),
        timeout=timeout,
    )  # fmt: skip


def test_a_whole_file_comes_through_whole(setup: tuple[Standalone, FaultyRegistry]):
    server, _ = setup
    reply = get(server, "faulty", "/files/ok.whl")
    assert reply.status == 200 and reply.body == faulty.BODY


def test_a_large_file_relayed_in_the_kernel_arrives_byte_for_byte(
    setup: tuple[Standalone, FaultyRegistry],
):
    server, _ = setup
    reply = get(server, "faulty", "/files/big.whl")
    assert reply.status == 200 and reply.body == faulty.BIG


@pytest.mark.parametrize("name", ["truncated.whl", "chunked-cut.whl", "big-cut.whl"])
def test_a_body_cut_short_upstream_never_reaches_the_client_as_complete(
    setup: tuple[Standalone, FaultyRegistry], name: str
):
    server, _ = setup
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):  # not whole
        get(server, "faulty", f"/files/{name}")


def test_a_small_body_cut_short_upstream_is_a_502_with_nothing_of_the_file(
    setup: tuple[Standalone, FaultyRegistry],
):
    server, _ = setup
    reply = get(server, "faulty", "/files/small-cut.whl")
    assert reply.status == 502
    assert b"ended before its declared length" in reply.body
    assert faulty.BODY[:1024] not in reply.body


def test_a_reset_before_any_answer_is_a_502_naming_the_connector(
    setup: tuple[Standalone, FaultyRegistry],
):
    server, _ = setup
    reply = get(server, "faulty", "/files/reset.whl")
    assert reply.status == 502
    assert b"connector default/faulty" in reply.body


def test_a_stall_ends_in_504_within_the_configured_timeout(
    setup: tuple[Standalone, FaultyRegistry],
):
    server, _ = setup
    started = time.monotonic()
    reply = get(server, "faulty", "/files/stall.whl")
    elapsed = time.monotonic() - started
    assert reply.status == 504
    assert f"did not answer in time (connect 2s, first byte {TIMEOUT:g}s".encode() in reply.body
    assert elapsed < TIMEOUT + 3


def test_a_stall_mid_body_closes_the_connection_instead_of_finishing(
    setup: tuple[Standalone, FaultyRegistry],
):
    server, _ = setup
    started = time.monotonic()
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        get(server, "faulty", "/files/stall-body.whl")
    assert time.monotonic() - started < TIMEOUT + 3


def test_a_registry_error_passes_through_with_its_body(setup: tuple[Standalone, FaultyRegistry]):
    server, _ = setup
    reply = get(server, "faulty", "/files/error.whl")
    assert (reply.status, reply.body) == (503, b"registry overloaded, try later\n")


def test_other_connectors_are_served_normally_during_stalls(
    setup: tuple[Standalone, FaultyRegistry],
):
    server, registry = setup

    def ten_index_pages() -> float:
        started = time.monotonic()
        for _ in range(10):
            assert get(server, "good", "/simple/").status == 200
        return time.monotonic() - started

    unloaded = ten_index_pages()  # pypiserver's password hashing sets the pace
    stalls = [
        threading.Thread(target=lambda: get(server, "faulty", "/files/stall.whl"))
        for _ in range(20)
    ]
    asked = len(registry.seen)
    for thread in stalls:
        thread.start()
    try:
        settled(
            lambda: sum(s.path == "/files/stall.whl" for s in registry.seen[asked:]) >= 20,
            20,
            "the stalls reaching the registry",
        )
        during = ten_index_pages()
        assert during < unloaded * 1.5 + 0.5, (unloaded, during)  # not queued behind stalls
    finally:
        for thread in stalls:
            thread.join()


def test_the_registry_only_ever_sees_its_own_host_and_the_connectors_credentials(
    setup: tuple[Standalone, FaultyRegistry], tmp_path: Path
):
    server, bad = setup
    index = get(server, "faulty", "/simple/anything/")
    assert index.status == 200
    # Only the reconciler's liveness probe comes without credentials, by design.
    unauthorized = {(seen.method, seen.path) for seen in bad.seen if not seen.authorized}
    assert unauthorized <= {("GET", "/simple/")}
    assert any(seen.authorized and seen.path == "/simple/anything/" for seen in bad.seen)
    assert {seen.host for seen in bad.seen} == {bad.url.removeprefix("http://")}

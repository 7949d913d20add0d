"""How each way a registry fails becomes one answer: the status a client sees, the kind
the audit line and metrics count, and a message naming the connector and where its
registry is, never the registry's password. The proxy answering these for real (refused
connections, stalls, broken streams, malformed pages) is in
tests/reliability/test_tenant_isolation.py, test_hostile_input.py and
tests/integration/test_diagnoses.py."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from connectors.api.errors import (
    DigestMismatch,
    Overloaded,
    RegistryDataError,
    RegistryRefused,
    RegistryTruncated,
)
from connectors.proxy.forwarding import ForwardSettings, explain_failure

REGISTRY = "https://robot:registry-password@registry.example:8443/simple/"
SETTINGS = ForwardSettings(
    connect_timeout_seconds=3, first_byte_timeout_seconds=20, idle_timeout_seconds=7.5
)


def _refused() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("registry.example", 8443, True, True, None, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


@pytest.mark.parametrize(
    ("exc", "kind", "status"),
    [
        (Overloaded("namespace ns holds its share of connections"), "busy", 503),
        (RegistryDataError("the index page is not HTML"), "malformed", 502),
        # The registry refusing the connector's own credentials is the registry's failure:
        # never a 401, which would send the client after its own (good) token.
        (RegistryRefused(), "refused", 502),
        (RegistryTruncated(), "truncated", 502),
        (DigestMismatch(), "mismatch", 502),
        (_refused(), "connect", 502),
        # aiohttp's timeouts are also ClientErrors: the timeout row must win.
        (aiohttp.ServerTimeoutError("read"), "timeout", 504),
        (aiohttp.ConnectionTimeoutError("connect"), "timeout", 504),
        (TimeoutError(), "timeout", 504),
        (aiohttp.ClientPayloadError("truncated"), "protocol", 502),
        (aiohttp.ServerDisconnectedError(), "protocol", 502),
    ],
)
def test_each_failure_has_one_status_and_kind(exc, kind, status):
    failure, message = explain_failure(exc, "ns/c", REGISTRY, SETTINGS)
    assert (failure.kind, failure.status) == (kind, status)
    assert "registry-password" not in message and "robot" not in message
    if kind != "busy":
        assert "ns/c" in message


def test_a_registry_failure_never_answers_500():
    failure, _ = explain_failure(aiohttp.InvalidURL("x"), "ns/c", REGISTRY, SETTINGS)
    assert failure.status == 502


def test_an_unreachable_registry_is_named_by_its_origin_and_the_condition_to_read():
    _, message = explain_failure(_refused(), "ns/c", REGISTRY, SETTINGS)
    assert "https://registry.example:8443" in message
    assert "LivenessReady" in message


def test_a_timeout_names_every_limit_the_client_could_have_hit():
    _, message = explain_failure(aiohttp.ServerTimeoutError(), "ns/c", REGISTRY, SETTINGS)
    assert "connect 3s, first byte 20s, silence 7.5s" in message


def test_refused_credentials_point_at_the_condition_that_explains_them():
    _, message = explain_failure(RegistryRefused(), "ns/c", REGISTRY, SETTINGS)
    assert "refused the connector's credentials" in message and "AuthReady" in message


def test_a_malformed_answer_says_what_was_wrong():
    _, message = explain_failure(RegistryDataError("a page over 8 MiB"), "ns/c", REGISTRY, SETTINGS)
    assert message.endswith("cannot use: a page over 8 MiB")

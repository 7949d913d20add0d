"""What users get when something is wrong: the right status code and a clear message from
the proxy, and the right Ready reason on the connector, against a real pypiserver."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from connectors.auth import tokens
from connectors.auth.keys import KeyRing
from connectors.standalone.localregistry import LocalRegistry, free_port
from tests.support import wire
from tests.support.standalone import Standalone, connector_manifest, secret_manifest
from tests.support.testcluster import ca_certificate_pem
from tests.support.waiting import settled

NS = "refusals"


@pytest.fixture(scope="module")
def good(standalone: Standalone, pypi_registry: LocalRegistry) -> str:
    standalone.write(
        NS,
        "good.yaml",
        secret_manifest("registry-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("good", pypi_registry.url),
        connector_manifest("other", pypi_registry.url),
    )
    standalone.wait_ready(NS, "good")
    standalone.wait_ready(NS, "other")
    return standalone.connector_url(NS, "good") + "/simple/"


def assert_challenge(reply: wire.Reply) -> None:
    assert reply.status == 401
    assert reply.header("WWW-Authenticate") == 'Basic realm="connectors"'


def test_no_token_is_401_with_a_basic_challenge(good: str):
    assert_challenge(wire.request("GET", good))


def test_a_validly_signed_token_made_to_outlive_the_maximum_lifetime_is_401(
    standalone: Standalone, good: str
):
    key = KeyRing(standalone.place.state.keys).signer()
    now = int(time.time())
    claims = {
        "iss": tokens.ISSUER, "sub": "standalone:forever", "iat": now, "nbf": now,
        "aud": [standalone.connector_url(NS, "good")], "scope": "download upload",
        "exp": now + 30 * 24 * 3600,
    }  # fmt: skip
    forever = jwt.encode(claims, key.private, algorithm=tokens.ALGORITHM, headers={"kid": key.kid})
    reply = wire.request("GET", good, headers=wire.basic(forever))
    assert_challenge(reply)
    assert b"longer than the issuer's maximum" in reply.body


def test_garbage_token_is_401(good: str):
    assert_challenge(wire.request("GET", good, headers=wire.basic("not-a-token")))
    assert_challenge(wire.request("GET", good, headers={"Authorization": "Basic %%%"}))
    assert_challenge(wire.request("GET", good, headers={"Authorization": "Negotiate abc"}))


def test_expired_token_is_401_and_says_so(standalone: Standalone, good: str):
    ring = KeyRing(standalone.place.state.keys)
    expired = tokens.issue(
        ring,
        audience=standalone.connector_url(NS, "good"),
        subject="test",
        ttl_seconds=60,
        now=time.time() - 3600,
    )
    reply = wire.request("GET", good, headers=wire.basic(expired))
    assert_challenge(reply)
    assert b"expired" in reply.body


def test_another_connectors_token_is_401(standalone: Standalone, good: str):
    reply = wire.request("GET", good, headers=wire.basic(standalone.token(NS, "other")))
    assert_challenge(reply)
    assert b"different connector" in reply.body


def test_token_signed_by_another_issuer_is_401(good: str, tmp_path):
    foreign = KeyRing.open(tmp_path / "keys")
    forged = tokens.issue(foreign, audience=good.removesuffix("/simple/"), subject="x")
    assert_challenge(wire.request("GET", good, headers=wire.basic(forged)))


def test_unknown_connector_is_404(standalone: Standalone):
    reply = wire.request("GET", standalone.connector_url(NS, "nope") + "/simple/")
    assert reply.status == 404
    assert b"connector refusals/nope not found" in reply.body


def test_registry_down_is_502_and_connection_failed(
    standalone: Standalone, pypi_registry: LocalRegistry
):
    dead = f"http://127.0.0.1:{free_port()}"
    standalone.write(NS, "down.yaml", connector_manifest("down", dead))
    ready = standalone.wait_ready(NS, "down", status="False", reason="ConnectionFailed")
    assert dead in ready["message"]
    reply = wire.request(
        "GET",
        standalone.connector_url(NS, "down") + "/simple/",
        headers=wire.basic(standalone.token(NS, "down")),
    )
    assert reply.status == 502
    assert b"cannot reach the registry of connector refusals/down" in reply.body


def test_wrong_password_is_authentication_failed_until_the_secret_is_fixed(
    standalone: Standalone, pypi_registry: LocalRegistry
):
    standalone.write(
        NS,
        "wrongpw.yaml",
        secret_manifest("wrong-secret", pypi_registry.username, "not-it"),
        connector_manifest("wrongpw", pypi_registry.url, secret="wrong-secret"),
    )
    standalone.wait_ready(NS, "wrongpw", status="False", reason="AuthenticationFailed")
    url = standalone.connector_url(NS, "wrongpw") + "/simple/"
    reply = wire.request("GET", url, headers=wire.basic(standalone.token(NS, "wrongpw")))
    # pypiserver refuses a wrong password with 403, which passes through as the registry's
    # decision; an upstream 401 would become 502. Either way no challenge reaches the
    # client, whose own token was fine.
    assert reply.status == 403
    assert reply.header("WWW-Authenticate") is None
    standalone.write(
        NS,
        "wrongpw.yaml",
        secret_manifest("wrong-secret", pypi_registry.username, pypi_registry.password),
        connector_manifest("wrongpw", pypi_registry.url, secret="wrong-secret"),
    )
    standalone.wait_ready(NS, "wrongpw")
    reply = wire.request("GET", url, headers=wire.basic(standalone.token(NS, "wrongpw")))
    assert reply.status == 200


def test_missing_secret_is_secret_not_found_and_503(
    standalone: Standalone, pypi_registry: LocalRegistry
):
    standalone.write(
        NS, "nosecret.yaml", connector_manifest("nosecret", pypi_registry.url, secret="absent")
    )
    ready = standalone.wait_ready(NS, "nosecret", status="False", reason="SecretNotFound")
    assert "Secret absent not found in namespace refusals" in ready["message"]
    reply = wire.request(
        "GET",
        standalone.connector_url(NS, "nosecret") + "/simple/",
        headers=wire.basic(standalone.token(NS, "nosecret")),
    )
    assert reply.status == 503


def test_a_ca_bundle_missing_or_unusable_is_ready_false_and_503_never_500(
    standalone: Standalone, pypi_registry: LocalRegistry
):
    manifest = json.loads(
        connector_manifest("private-ca", pypi_registry.url, secret="private-ca-secret")
    )
    manifest["spec"]["caCertSecretRef"] = {"name": "registry-ca"}
    secret = secret_manifest("private-ca-secret", pypi_registry.username, pypi_registry.password)
    url = standalone.connector_url(NS, "private-ca") + "/simple/"

    def answer() -> wire.Reply:
        return wire.request("GET", url, headers=wire.basic(standalone.token(NS, "private-ca")))

    def with_ca(ca_crt: bytes | None) -> None:
        documents = [secret, json.dumps(manifest)]
        if ca_crt is not None:
            data = {"ca.crt": base64.b64encode(ca_crt).decode()}
            ca_secret = {"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "registry-ca"}, "data": data}  # fmt: skip
            documents.append(json.dumps(ca_secret))
        standalone.write(NS, "private-ca.yaml", *documents)

    with_ca(None)
    ready = standalone.wait_ready(NS, "private-ca", status="False", reason="CACertNotFound")
    assert "registry-ca" in ready["message"]
    assert answer().status == 503
    # A tenant's CA Secret is untrusted input: one that holds no certificate is named as
    # such, and the proxy refuses that connector cleanly.
    with_ca(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    ready = standalone.wait_ready(NS, "private-ca", status="False", reason="InvalidPEM")
    assert "ca.crt" in ready["message"]
    refused = answer()
    assert refused.status == 503 and b"ca.crt" in refused.body
    with_ca(ca_certificate_pem("registry private CA"))
    standalone.wait_ready(NS, "private-ca")
    assert answer().status == 200


def test_unknown_class_is_connector_class_not_found(
    standalone: Standalone, pypi_registry: LocalRegistry
):
    standalone.write(
        NS, "noclass.yaml", connector_manifest("noclass", pypi_registry.url, class_name="maven9")
    )
    ready = standalone.wait_ready(NS, "noclass", status="False", reason="ConnectorClassNotFound")
    assert "maven9" in ready["message"]


def test_malformed_file_is_reported_while_valid_connectors_keep_serving(
    standalone: Standalone, good: str
):
    broken = standalone.write(
        NS,
        "broken.yaml",
        "apiVersion: connectors.alauda.io/v1alpha1\nkind: Connector\n"
        "metadata: {name: broken}\nspec: {address: 42}\n",
    )
    problems = settled(
        lambda: standalone.problems() or None,
        15,
        "the malformed file reported",
    )
    assert any(
        str(broken) in p and "document 1" in p and "spec.connectorClassName" in p for p in problems
    ), problems
    reply = wire.request("GET", good, headers=wire.basic(standalone.token(NS, "good")))
    assert reply.status == 200
    assert str(broken) in standalone.log_file.read_text()


def test_unparseable_yaml_is_reported_with_its_line(standalone: Standalone):
    broken = standalone.write(NS, "unparseable.yaml", "kind: [unclosed\n")
    problems = settled(
        lambda: [p for p in standalone.problems() if str(broken) in p] or None,
        15,
        "the unparseable file reported",
    )
    assert any(str(broken) in p and "line" in p for p in problems), problems

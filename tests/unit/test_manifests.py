"""Resource documents are read as users write them, and bad ones are reported precisely."""

from __future__ import annotations

import base64

import pytest

from connectors.api import manifests
from connectors.api.errors import ManifestError
from connectors.api.resources import Connector, Secret
from tests.support import seed

SEED = seed.step_2()


def test_seed_manifests_land_in_the_namespace_given_on_the_command_line():
    secret, connector = manifests.parse_text(SEED, source="seed", namespace="connectors-pypi-demo")
    assert isinstance(secret, Secret) and isinstance(connector, Connector)
    assert secret.key == ("connectors-pypi-demo", "pypi-registry-secret")
    assert secret.data == {
        "username": b"your-registry-username",
        "password": b"your-registry-password",
    }
    assert connector.key == ("connectors-pypi-demo", "pypi-connector")
    assert connector.spec.address == "https://nexus.example.com/repository/pypi"
    assert connector.spec.auth is not None and connector.spec.auth.secret_ref is not None
    assert connector.spec.auth.secret_ref.name == "pypi-registry-secret"


def test_base64_data_and_string_data_merge_with_string_data_winning():
    alice, x = (base64.b64encode(v).decode() for v in (b"alice", b"x"))
    text = f"""
apiVersion: v1
kind: Secret
metadata: {{name: s}}
type: kubernetes.io/basic-auth
data: {{username: {alice}, password: {x}}}
stringData: {{password: from-string-data}}
"""
    (secret,) = manifests.parse_text(text, source="s.yaml")
    assert isinstance(secret, Secret)
    assert secret.data == {"username": b"alice", "password": b"from-string-data"}


def test_a_secrets_repr_names_keys_but_never_values():
    secret, _ = manifests.parse_text(SEED, source="seed")
    assert "your-registry-password" not in repr(secret)
    assert "your-registry-password" not in str(secret)
    assert "password" in repr(secret)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            "apiVersion: connectors.alauda.io/v1alpha1\nkind: Connector\n"
            "metadata: {name: c}\nspec: {address: http://x}\n",
            "f.yaml, document 2, field spec.connectorClassName: is required",
        ),
        (
            "apiVersion: connectors.alauda.io/v1alpha1\nkind: Connector\n"
            "metadata: {name: c}\nspec: {connectorClassName: pypi, address: [1]}\n",
            "f.yaml, document 2, field spec.address: expected a string, got a list",
        ),
        (
            "apiVersion: connectors.alauda.io/v1alpha1\nkind: Connector\nmetadata: {name: c}\n"
            "spec: {connectorClassName: pypi, address: http://x, auth: {secretRef: {}}}\n",
            "f.yaml, document 2, field spec.auth.secretRef.name: is required",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: '***'}\n",
            "f.yaml, document 2, field data.password: is not valid base64",
        ),
        (
            "apiVersion: v2\nkind: Connector\nmetadata: {name: c}\n",
            "f.yaml, document 2, field apiVersion: Connector must have apiVersion "
            "connectors.alauda.io/v1alpha1, not 'v2'",
        ),
    ],
)
def test_a_bad_document_is_reported_with_file_document_and_field(document: str, expected: str):
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n---\n" + document
    with pytest.raises(ManifestError) as caught:
        manifests.parse_text(text, source="f.yaml")
    assert str(caught.value) == expected


def test_unparseable_yaml_names_the_line():
    with pytest.raises(ManifestError) as caught:
        manifests.parse_text("kind: Secret\n  bad: [indent\n", source="broken.yaml")
    assert str(caught.value).startswith("broken.yaml: not valid YAML at line 2")


def test_kinds_connectors_does_not_use_are_passed_over():
    text = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: twine-upload}\n"
    assert manifests.parse_text(text, source="job.yaml") == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"address": "https://alice:S3cr3t@r.example.com/simple"}, "spec.address"),
        ({"address": "https://token-only@r.example.com"}, "spec.address"),
        (
            {
                "address": "https://r.example.com",
                "addressExtensions": [{"name": "files", "value": "https://alice:S3cr3t@f.example"}],
            },
            "spec.addressExtensions[0].value",
        ),
    ],
)
def test_an_address_carrying_credentials_is_refused_without_repeating_them(
    spec: dict[str, object], field: str
):
    document = {
        "apiVersion": "connectors.alauda.io/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": "c"},
        "spec": {"connectorClassName": "pypi", **spec},
    }
    with pytest.raises(ManifestError) as caught:
        manifests.parse(document)
    assert str(caught.value) == (
        f"field {field}: must not carry credentials (user:password@): put them in the Secret "
        "named by spec.auth.secretRef; this Connector is not served until then"
    )


def test_an_at_sign_in_an_address_path_is_not_taken_for_credentials():
    document = {
        "apiVersion": "connectors.alauda.io/v1alpha1",
        "kind": "Connector",
        "metadata": {"name": "c"},
        "spec": {"connectorClassName": "pypi", "address": "https://r.example.com/@scope/simple"},
    }
    connector = manifests.parse(document)
    assert isinstance(connector, Connector)
    assert connector.spec.address == "https://r.example.com/@scope/simple"

"""Reading a kubeconfig: the current context's server, CA and credentials, nothing shown."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from connectors.api.errors import StateError
from connectors.kube import client, config


def write(path: Path, user: dict[str, str], **cluster: object) -> Path:
    path.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "b",
            "clusters": [
                {"name": "one", "cluster": {"server": "https://wrong:1"}},
                {"name": "two", "cluster": {"server": "https://api.example:6443/", **cluster}},
            ],
            "users": [{"name": "u", "user": user}],
            "contexts": [
                {"name": "a", "context": {"cluster": "one", "user": "u"}},
                {"name": "b", "context": {"cluster": "two", "user": "u", "namespace": "ci"}},
            ],
        })
    )  # fmt: skip
    return path


def test_the_current_context_decides_server_namespace_and_credentials(tmp_path: Path):
    ca = b"-----BEGIN CERTIFICATE-----\n"
    path = write(
        tmp_path / "kc",
        {"token": "s3cr3t-token"},
        **{"certificate-authority-data": base64.b64encode(ca).decode()},
    )
    loaded = config.load(path)
    assert (loaded.server, loaded.namespace, loaded.ca_data) == (
        "https://api.example:6443",
        "ci",
        ca,
    )
    assert loaded.bearer_token() == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(loaded)


def test_a_token_file_is_read_afresh_each_time(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    loaded = config.load(write(tmp_path / "kc", {"tokenFile": "token"}))
    assert loaded.bearer_token() == "first"
    token_file.write_text("rotated\n")
    assert loaded.bearer_token() == "rotated"


def test_no_kubeconfig_anywhere_says_what_to_do(tmp_path: Path):
    with pytest.raises(StateError, match="pass --kubeconfig or set KUBECONFIG"):
        config.load(environ={"KUBECONFIG": str(tmp_path / "absent")})


def test_a_context_naming_a_missing_cluster_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "kc"
    path.write_text(json.dumps({"current-context": "x", "contexts": []}))
    with pytest.raises(StateError, match="has no context named 'x'"):
        config.load(path)


@pytest.mark.parametrize(
    ("api_version", "kind", "namespace", "path"),
    [
        ("v1", "Secret", "demo", "/api/v1/namespaces/demo/secrets/n"),
        ("connectors.alauda.io/v1alpha1", "ConnectorClass", None,
         "/apis/connectors.alauda.io/v1alpha1/connectorclasses/n"),
        ("connectors.alauda.io/v1alpha1", "Connector", "demo",
         "/apis/connectors.alauda.io/v1alpha1/namespaces/demo/connectors/n"),
    ],
)  # fmt: skip
def test_resource_paths_follow_the_api_conventions(
    api_version: str, kind: str, namespace: str | None, path: str
):
    assert client.resource_path(api_version, kind, name="n", namespace=namespace) == path

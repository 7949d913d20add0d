"""How to reach the Kubernetes API server: a kubeconfig file, or the pod's own account.

Read once at start-up into a frozen `ClusterConfig` and passed down; nothing here runs at
import time. Only what connectors' components need is supported: a server URL, its CA, and
a bearer token (static, or a projected token file re-read as kubelet rotates it) or a
client certificate. The config's repr never shows a token or a key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors.api.errors import StateError

IN_CLUSTER_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    server: str
    ca_data: bytes | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    token_file: Path | None = None
    client_cert: bytes | None = dataclasses.field(default=None, repr=False)
    client_key: bytes | None = dataclasses.field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False
    namespace: str = "default"

    def __repr__(self) -> str:
        kind = "token" if self.token else "token file" if self.token_file else "certificate"
        return f"ClusterConfig(server={self.server!r}, credentials=<{kind}>)"

    def bearer_token(self) -> str | None:
        """The token to send now; a token file is re-read because kubelet rotates it."""
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_data:
            context.load_verify_locations(cadata=self.ca_data.decode("ascii"))
        if self.insecure_skip_tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert and self.client_key:
            _load_client_certificate(context, self.client_cert, self.client_key)
        return context


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module reads certificates only from files: write them to a private temporary
    # directory for the moment of loading.
    with tempfile.TemporaryDirectory(prefix="connectors-kube-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path)


def load(
    kubeconfig: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> ClusterConfig:
    """The config from `kubeconfig`, else $KUBECONFIG, else ~/.kube/config, else in-cluster."""
    env = os.environ if environ is None else environ
    candidates = [kubeconfig] if kubeconfig else []
    if not candidates and env.get("KUBECONFIG"):
        candidates = [Path(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
    if not candidates and "KUBERNETES_SERVICE_HOST" in env:
        return in_cluster(env)
    if not candidates:
        candidates = [Path.home() / ".kube" / "config"]
    for path in candidates:
        if path.is_file():
            return from_kubeconfig(path)
    raise StateError(
        f"no kubeconfig at {', '.join(map(str, candidates))} and not running in a cluster: "
        "pass --kubeconfig or set KUBECONFIG"
    )


def in_cluster(env: Mapping[str, str]) -> ClusterConfig:
    host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    namespace_file = IN_CLUSTER_ACCOUNT / "namespace"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ca_data=(IN_CLUSTER_ACCOUNT / "ca.crt").read_bytes(),
        token_file=IN_CLUSTER_ACCOUNT / "token",
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
    )


def from_kubeconfig(path: Path) -> ClusterConfig:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StateError(f"cannot read kubeconfig {path}: {exc.__class__.__name__}") from exc
    if not isinstance(document, dict):
        raise StateError(f"kubeconfig {path} is not a mapping")
    context = _named(document, "contexts", document.get("current-context"), path)["context"]
    cluster = _named(document, "clusters", context.get("cluster"), path)["cluster"]
    user = _named(document, "users", context.get("user"), path).get("user") or {}
    base = path.parent
    token_file = user.get("tokenFile")
    return ClusterConfig(
        server=str(cluster["server"]).rstrip("/"),
        ca_data=_data_or_file(cluster, "certificate-authority", base),
        token=user.get("token"),
        token_file=(base / token_file) if token_file else None,
        client_cert=_data_or_file(user, "client-certificate", base),
        client_key=_data_or_file(user, "client-key", base),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=str(context.get("namespace") or "default"),
    )


def _named(document: dict[str, Any], section: str, name: object, path: Path) -> dict[str, Any]:
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise StateError(f"kubeconfig {path} has no {section[:-1]} named {name!r}")


def _data_or_file(section: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    if section.get(f"{key}-data"):
        try:
            return base64.b64decode(section[f"{key}-data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise StateError(f"kubeconfig field {key}-data is not valid base64") from exc
    if section.get(key):
        return (base / str(section[key])).read_bytes()
    return None

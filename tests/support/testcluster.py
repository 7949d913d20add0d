"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

It is what connectors talks to: CRDs, RBAC, TokenRequest, TokenReview, SubjectAccessReview,
owner references and garbage collection all behave as on any cluster. Alone, nothing runs
Pods (fast tests play kubelet's part where they need one); given a `NodeAccess`, it serves
a real node too (see tests/support/node.py): it listens on the node's address, which the
`kubernetes` Service then points at, its certificate covers the Service's address, it can
reach kubelet for logs and exec, and kubelet authenticates as `system:node:<name>`.

The binaries come from `scripts/build-testbin` (found through $CONNECTORS_TESTBIN);
kubectl is the PyPI wheel's. Used by the pytest fixture `kube_cluster` and by
`scripts/testcluster up|down|env`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.standalone.localregistry import free_port
from tests.support.waiting import settled

ISSUER = "https://kubernetes.default.svc.cluster.local"
KUBECTL = Path(sys.executable).parent / "kubectl"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
# The address of the `kubernetes` Service in the cluster's service range.
KUBERNETES_SERVICE_IP = "10.96.0.1"


@dataclass(frozen=True)
class NodeAccess:
    """A real node's name and address, for a control plane that serves it."""

    name: str
    ip: str


def testbin() -> Path | None:
    """The directory holding the built binaries, or None when they are not built."""
    directory = os.environ.get("CONNECTORS_TESTBIN")
    if not directory:
        cache = Path(
            os.environ.get("CONNECTORS_TESTBIN_CACHE", Path.home() / ".cache/connectors/testbin")
        )
        built = sorted(cache.glob("kube-v*"), reverse=True) if cache.is_dir() else []
        complete = [p for p in built if all((p / b).is_file() for b in BINARIES)]
        directory = str(complete[0]) if complete else ""
    if directory and all((Path(directory) / b).is_file() for b in BINARIES):
        return Path(directory)
    return None


def missing_reason() -> str | None:
    if testbin() is None:
        return "the test control plane is not built: run scripts/build-testbin"
    if not KUBECTL.is_file():
        return f"kubectl not found at {KUBECTL}: run scripts/bootstrap dev"
    return None


# --- certificates ---------------------------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    client: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def ca_certificate_pem(common_name: str) -> bytes:
    """A fresh self-signed CA certificate, PEM: what a private registry's CA bundle holds."""
    key = _key()
    return _certificate(_name(common_name), key, None, ca=True).public_bytes(
        serialization.Encoding.PEM
    )


def write_pki(directory: Path, node: NodeAccess | None = None) -> None:
    """A CA, the API server's serving certificate, an admin client certificate, and the
    service-account signing key pair; for a node, also the API server's client certificate
    towards kubelet and kubelet's own."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("connectors-test-ca")
    ca = _certificate(ca_name, ca_key, None, ca=True)
    server_key = _key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    if node:  # what Pods dial: the Service's name and address, and the endpoint behind it
        sans += [
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.IPAddress(ipaddress.ip_address(KUBERNETES_SERVICE_IP)),
            x509.IPAddress(ipaddress.ip_address(node.ip)),
        ]
    server = _certificate(_name("kube-apiserver"), server_key, (ca_name, ca_key), sans=sans)
    admin_key = _key()
    admin = _certificate(
        _name("connectors-test-admin", "system:masters"), admin_key, (ca_name, ca_key), client=True
    )
    sa_key = _key()
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "server.crt": server.public_bytes(serialization.Encoding.PEM),
        "server.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    if node:
        clients = {
            "kubelet-client": _name("kube-apiserver-kubelet-client", "system:masters"),
            "node": _name(f"system:node:{node.name}", "system:nodes"),
        }
        for stem, subject in clients.items():
            key = _key()
            cert = _certificate(subject, key, (ca_name, ca_key), client=True)
            files[f"{stem}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
            files[f"{stem}.key"] = _pem_key(key)
    for filename, data in files.items():
        path = directory / filename
        path.write_bytes(data)
        path.chmod(0o600)


def kubeconfig_text(
    server: str, ca: bytes, user: dict[str, str], namespace: str = "default"
) -> str:
    """A kubeconfig with one cluster, one user and one context, all named `test`."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "test", "user": user}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "test", "namespace": namespace},
                }
            ],
            "current-context": "test",
        },
        indent=1,
    )


# --- the cluster ----------------------------------------------------------------------------


class TestCluster:
    """etcd + kube-apiserver + kube-controller-manager, with state under `workdir`."""

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path, binaries: Path, node: NodeAccess | None = None) -> None:
        self.workdir = workdir
        self.binaries = binaries
        self.node = node
        self.pki = workdir / "pki"
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.pids_file = workdir / "pids.json"
        self.server = ""
        self._apiserver: list[str] = []

    # Starting and stopping ---------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_pki(self.pki, self.node)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        pids = {"etcd": self._spawn("etcd", self._etcd_args(etcd_port, peer_port))}
        self._write_pids(pids)
        self._apiserver = self._apiserver_args(etcd_port, api_port)
        pids["kube-apiserver"] = self._spawn("kube-apiserver", self._apiserver)
        self._write_pids(pids)
        ca = (self.pki / "ca.crt").read_bytes()
        admin = {
            "client-certificate-data": base64.b64encode(
                (self.pki / "admin.crt").read_bytes()
            ).decode(),
            "client-key-data": base64.b64encode((self.pki / "admin.key").read_bytes()).decode(),
        }
        self.kubeconfig.write_text(kubeconfig_text(self.server, ca, admin))
        self.kubeconfig.chmod(0o600)
        self._wait_ready(timeout)
        pids["kube-controller-manager"] = self._spawn(
            "kube-controller-manager", self._controller_args()
        )
        self._write_pids(pids)

    def stop(self) -> None:
        """Stop every process this cluster (or an earlier `up` of it) started."""
        pids = self._read_pids()
        for name in reversed(list(pids)):
            _terminate(pids[name])
        self.pids_file.unlink(missing_ok=True)

    def stop_apiserver(self) -> None:
        """Kill the API server at once, as a crash would (etcd and the controller manager
        keep running)."""
        pids = self._read_pids()
        _terminate(pids.pop("kube-apiserver"), grace=0)
        self._write_pids(pids)

    def start_apiserver(self, timeout: float = 90.0) -> None:
        """Bring the API server back on the same address, with the same keys and data."""
        pids = self._read_pids()
        pids["kube-apiserver"] = self._spawn("kube-apiserver", self._apiserver)
        self._write_pids(pids)
        self._wait_ready(timeout)

    def _spawn(self, binary: str, args: list[str]) -> int:
        log = (self.workdir / f"{binary}.log").open("ab")
        process = subprocess.Popen(
            [str(self.binaries / binary), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return process.pid

    def _etcd_args(self, port: int, peer: int) -> list[str]:
        return [
            "--name=test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{port}",
            f"--advertise-client-urls=http://127.0.0.1:{port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",  # a throwaway test store: speed over durability
            "--log-level=warn",
        ]

    def _apiserver_args(self, etcd_port: int, port: int) -> list[str]:
        pki = self.pki
        if self.node is None:
            addresses = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
            authorization = ["--authorization-mode=RBAC"]
        else:
            addresses = ["--bind-address=0.0.0.0", f"--advertise-address={self.node.ip}"]
            authorization = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            ]
        return [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            *addresses,
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            *authorization,
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--api-audiences={ISSUER}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--v=1",
        ]

    def _controller_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            "--use-service-account-credentials=false",
            "--v=1",
        ]

    def _wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")

        def ready() -> bool:
            self._check_alive()  # a control-plane process that died fails at once
            with urllib.request.urlopen(self.server + "/readyz", context=context, timeout=5) as r:
                return bool(r.status == 200)

        settled(ready, timeout, "kube-apiserver ready")

    def _check_alive(self) -> None:
        for name, pid in self._read_pids().items():
            if not _alive(pid):
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited:\n{log}")

    def _write_pids(self, pids: dict[str, int]) -> None:
        self.pids_file.write_text(json.dumps({"server": self.server, "pids": pids}))

    def _read_pids(self) -> dict[str, int]:
        try:
            data = json.loads(self.pids_file.read_text())
        except (OSError, ValueError):
            return {}
        self.server = self.server or data.get("server", "")
        return {str(k): int(v) for k, v in data.get("pids", {}).items()}

    # Using it ----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster (as admin unless `kubeconfig` says)."""
        result = subprocess.run(
            [str(KUBECTL), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def kubectl_json(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.kubectl(*args, "-o", "json", stdin=stdin).stdout)
        return loaded

    def create_namespace(self, name: str, timeout: float = 30) -> None:
        """Create a namespace (if missing) and wait for the controller manager to give it
        its `default` ServiceAccount, as Pods need one to be admitted."""
        self.kubectl("create", "namespace", name, check=False)
        settled(
            lambda: (
                not self.kubectl(
                    "get", "serviceaccount", "default", "-n", name, check=False
                ).returncode
            ),
            timeout,
            f"namespace {name} given its default ServiceAccount",
        )

    def token_kubeconfig(self, name: str, token: str, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with `token` (a ServiceAccount's, say)."""
        path = self.workdir / f"{name}.kubeconfig"
        ca = (self.pki / "ca.crt").read_bytes()
        path.write_text(kubeconfig_text(self.server, ca, {"token": token}, namespace))
        path.chmod(0o600)
        return path


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[TestCluster]:
    """A started cluster under `workdir`, stopped afterwards; the binaries must be built
    (check `missing_reason()` first)."""
    binaries = testbin()
    if binaries is None:
        raise RuntimeError("the test control plane is not built: run scripts/build-testbin")
    cluster = TestCluster(workdir, binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return finished == 0


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (at once with 0); returns once it is gone."""
    try:
        os.killpg(pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    """`up`, `down` or `env` for the cluster kept in $CONNECTORS_TESTCLUSTER_DIR."""
    command = argv[0] if argv else ""
    workdir = Path(
        os.environ.get("CONNECTORS_TESTCLUSTER_DIR", Path.home() / ".cache/connectors/testcluster")
    )
    binaries = testbin()
    if command not in ("up", "down", "env"):
        print("usage: scripts/testcluster up|down|env", file=sys.stderr)
        return 2
    cluster = TestCluster(workdir, binaries or Path())
    if command == "down":
        cluster.stop()
        return 0
    if command == "env":
        if not cluster.pids_file.exists():
            print("no test cluster is up: run scripts/testcluster up", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if binaries is None:
        print("the binaries are not built: run scripts/build-testbin", file=sys.stderr)
        return 1
    cluster.stop()
    started = time.monotonic()
    cluster.start()
    print(
        f"test cluster up at {cluster.server} in {time.monotonic() - started:.1f}s", file=sys.stderr
    )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The real node and what runs on it, shared by the node tests: the node itself
(tests/support/node.py), the chart installed with Helm as users install it, and a
password-protected pypiserver on the node's address, where Pods can reach it."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.conftest import require
from tests.support import images, leaks, testcluster, wire
from tests.support import node as node_support
from tests.support.node import Node
from tests.support.waiting import settled

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "connectors"
RELEASE_NS = "connectors-system"
COMPONENTS = ("connectors-operator", "connectors-proxy", "connectors-csi")


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A control plane and one real node, for the node tests. The node tests run first
    (tests/conftest.py orders them) and the node stays up, idle, while the rest of the
    run goes on, so the long-form renewal test at the end has had its Pod's first token
    expire meanwhile; it is torn down when the session ends."""
    missing = testcluster.missing_reason() or node_support.missing_reason()
    require(missing is None, missing or "")
    with node_support.running(tmp_path_factory.mktemp("node")) as node:
        yield node


def helm(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(node.binaries / "helm"), "--kubeconfig", str(node.cluster.kubeconfig), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


# The shortest token lifetime the API server allows, so the long-form renewal test
# (test_zz_token_renewal_on_a_node.py) sees a Pod's first token expire within the run.
TOKEN_SECONDS = 600


def chart_values(node: Node) -> list[str]:
    """What an installer sets: where the image is (here: the one imported into the node)
    and, since node-driver-registrar cannot be had here, our registrar stand-in; and the
    shortest token lifetime (the chart's default is the seed's 30 minutes)."""
    repository, tag = node.project_image.rsplit(":", 1)
    return [
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"csi.registrarImage={images.REGISTRAR}",
        "--set", f"csi.tokenExpirationSeconds={TOKEN_SECONDS}",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def chart(kube_node: Node) -> Iterator[Node]:
    """The chart installed as docs/install.md says, every component up and answering."""
    result = helm(
        kube_node, "install", "connectors", str(CHART), "--namespace", RELEASE_NS,
        "--create-namespace", "--wait", "--timeout", "180s", *chart_values(kube_node),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    settled(lambda: csi_registered(kube_node), 60, "kubelet registered connectors-csi")
    settled(lambda: lease_holder(kube_node), 60, "an operator replica leads")
    leaks.BEFORE_SCAN.append(lambda: save_component_logs(kube_node))
    yield kube_node
    save_component_logs(kube_node)


def get(node: Node, *args: str) -> dict[str, Any]:
    """`kubectl get ... -o json`, parsed."""
    found: dict[str, Any] = json.loads(node.cluster.kubectl("get", *args, "-o", "json").stdout)
    return found


def csi_registered(node: Node) -> bool:
    csinode = get(node, "csinode", node.access.name)
    drivers = (csinode.get("spec") or {}).get("drivers") or []
    return any(d.get("name") == "connectors-csi" for d in drivers)


def lease_holder(node: Node) -> str:
    lease = node.cluster.kubectl(
        "get", "lease", "connectors-operator", "-n", RELEASE_NS, "-o",
        "jsonpath={.spec.holderIdentity}", check=False,
    )  # fmt: skip
    return lease.stdout.strip() if lease.returncode == 0 else ""


def pods(node: Node, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = get(node, "pods", "-n", namespace, "-l", selector)
    return list(found["items"])


def save_component_logs(node: Node) -> None:
    """Every component's log, where the run's final scan looks for passwords and tokens."""
    for component in COMPONENTS:
        stem = component.removeprefix("connectors-")
        for pod in pods(node, RELEASE_NS, f"app.kubernetes.io/name={component}"):
            name = pod["metadata"]["name"]
            logs = node.cluster.kubectl(
                "logs", "-n", RELEASE_NS, str(name), "--all-containers", "--prefix", check=False
            )  # fmt: skip
            (node.workdir / f"{stem}-{name}.log").write_text(logs.stdout + logs.stderr)


@pytest.fixture(scope="session")
def node_registry(
    kube_node: Node, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRegistry]:
    """pypiserver with a password on the node's address, where Pods reach it."""
    with localregistry.pypiserver(
        tmp_path_factory.mktemp("node-registry"),
        host=kube_node.access.ip,
        hash_scheme="apr_md5_crypt",
    ) as registry:
        leaks.PASSWORDS.add(registry.password)
        leaks.USERNAMES.add(registry.username)
        yield registry


def json_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def sample_sdist() -> Path:
    """sampleproject 4.0.0's source (the seed's upload Job clones it), fetched on the host
    once: Pods cannot reach the Internet."""
    cache = images.CACHE / "sampleproject"
    found = sorted(cache.glob("sampleproject-4.0.0.tar.gz"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary=:all:", "--dest", str(cache), "sampleproject==4.0.0"],
            check=True, timeout=300,
        )  # fmt: skip
        found = sorted(cache.glob("sampleproject-4.0.0.tar.gz"))
    return found[0]


def phase(node: Node, namespace: str, name: str) -> str:
    return node.cluster.kubectl(
        "get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
    ).stdout.strip()  # fmt: skip


def run_pod(node: Node, name: str, code: str, namespace: str = "default") -> str:
    """Python run in a throwaway Pod on the node, again until it succeeds (a Service may
    refuse for a moment after its Pods turn Ready, until kube-proxy syncs); its output."""
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "python:3-bookworm",
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["python3", "-c", code]}]},
    }  # fmt: skip

    def attempt() -> str | None:
        node.cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait", check=False)
        node.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        done = settled(
            lambda: phase(node, namespace, name) in ("Succeeded", "Failed")
            and phase(node, namespace, name),
            60, f"pod {name} finished",
        )  # fmt: skip
        logs = node.cluster.kubectl("logs", name, "-n", namespace).stdout
        return logs if done == "Succeeded" else None

    logs = settled(attempt, 60, f"pod {name} succeeded")
    node.cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
    return logs


def connector(name: str, registry: LocalRegistry) -> str:
    return "\n---\n".join([
        json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                    "metadata": {"name": f"{name}-secret"},
                    "stringData": {"username": registry.username,
                                   "password": registry.password}}),
        json.dumps({"apiVersion": "connectors.alauda.io/v1alpha1", "kind": "Connector",
                    "metadata": {"name": name},
                    "spec": {"connectorClassName": "pypi", "address": registry.url,
                             "auth": {"name": "basicAuth",
                                      "secretRef": {"name": f"{name}-secret"}}}}),
    ])  # fmt: skip


def client_pod(name: str, connector_name: str = "mirror") -> str:
    """A Pod holding the connector's pip.conf with `subPath`, as the seed's Jobs do."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "python:3-bookworm", "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "pipconf", "mountPath": "/root/.pip/pip.conf",
                              "subPath": "pip.conf"}]}],
            "volumes": [{"name": "pipconf", "csi": {
                "driver": "connectors-csi", "readOnly": True,
                "volumeAttributes": {"connector.name": connector_name,
                                     "configuration.names": "pipconf"}}}]},
    })  # fmt: skip


def token_in(pip_conf: str) -> str:
    found = re.search(r"index-url = http://[^:]+:([^@]+)@", pip_conf)
    assert found, pip_conf
    return found.group(1)


@dataclass
class Tenant:
    """A namespace holding Connector `mirror` (the node registry), reached as a client in
    the cluster would reach it: through the shared proxy Service's ClusterIP, which
    kube-proxy translates."""

    node: Node
    namespace: str
    proxy_ip: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.node.cluster.kubectl(*args, stdin=stdin, check=check).stdout

    def status(self, token: str, connector: str = "mirror") -> int:
        """One client request for the connector's index."""
        host = f"c-{connector}.{self.namespace}.svc.cluster.local"
        reply = wire.request(
            "GET", f"http://{self.proxy_ip}/simple/", headers={"Host": host, **wire.basic(token)}
        )  # fmt: skip
        return reply.status

    def ready(self, name: str) -> bool:
        found = get(self.node, "connector", name, "-n", self.namespace)
        conditions = (found.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def run_client(self, pod: str, connector: str = "mirror") -> None:
        """Start `client_pod` and wait until it runs."""
        self.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=client_pod(pod, connector))
        settled(lambda: phase(self.node, self.namespace, pod) == "Running", 120,
                f"pod {pod} Running")  # fmt: skip

    def pip_conf(self, pod: str) -> str:
        text = self.kubectl("exec", pod, "-n", self.namespace, "--", "cat", "/root/.pip/pip.conf")
        leaks.record(f"node: {pod} pip.conf", text)
        return text


@contextlib.contextmanager
def tenant(node: Node, registry: LocalRegistry, namespace: str) -> Iterator[Tenant]:
    """A fresh namespace with Connector `mirror` Ready, removed afterwards."""
    service = get(node, "service", "connectors-proxy", "-n", RELEASE_NS)
    made = Tenant(node, namespace, str(service["spec"]["clusterIP"]))
    node.cluster.kubectl("create", "namespace", namespace)
    made.kubectl("apply", "-n", namespace, "-f", "-", stdin=connector("mirror", registry))
    settled(lambda: made.ready("mirror"), 60, f"Connector mirror Ready in {namespace}")
    yield made
    node.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@dataclass
class RenewalPod:
    """A Pod started as soon as the chart is up, mounting pip.conf the seed's way
    (`subPath`), whose first token the last node test watches expire. A thread reads the
    file in the running container every 10 s from the start, as a long-lived job would, so
    the renewal is seen however late in the run that test comes."""

    tenant: Tenant
    name: str
    first_token: str
    started: float
    inode: str  # of /root/.pip/pip.conf in the container, when it started
    renewed_at: float | None = None
    _watcher: threading.Thread | None = None

    def watch(self, until: float) -> None:
        def poll() -> None:
            while time.time() < until:
                # A failed exec, or a read that overlapped the rewrite, is read again later.
                with contextlib.suppress(subprocess.SubprocessError, OSError, AssertionError):
                    if token_in(self.tenant.pip_conf(self.name)) != self.first_token:
                        self.renewed_at = time.time()
                        return
                time.sleep(10)

        self._watcher = threading.Thread(target=poll, daemon=True)
        self._watcher.start()

    def watched(self) -> None:
        """Wait until the watch has ended: renewed, or its time is up."""
        if self._watcher is not None:
            self._watcher.join()


@pytest.fixture(scope="session", autouse=True)
def renewal_pod(chart: Node, node_registry: LocalRegistry) -> Iterator[RenewalPod]:
    """Created before the other node tests run, so the long wait for the first token to
    expire overlaps the rest of the run (test_zz_token_renewal_on_a_node.py runs last)."""
    with tenant(chart, node_registry, "node-renewal") as renewal:
        renewal.run_client("long-lived")
        started = time.time()
        first = token_in(renewal.pip_conf("long-lived"))
        inode = renewal.kubectl(
            "exec", "long-lived", "-n", renewal.namespace, "--", "stat", "-c", "%i",
            "/root/.pip/pip.conf",
        )  # fmt: skip
        pod = RenewalPod(renewal, "long-lived", first, started, inode)
        pod.watch(until=started + TOKEN_SECONDS + 60)
        yield pod

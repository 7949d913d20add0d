"""What a node holds, on a real node with the chart as shipped: the CSI driver may mint no
token anywhere; the token in a mounted file is the one kubelet minted for the Pod (bound to
it, for the proxy's workload audience alone), lives on a tmpfs and in no file on the
node's disk, and is refused once the Pod is gone; and a `subPath` mount, the seed's way,
sees its file rewritten while the container runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.auth import audiences, reviews
from connectors.csi import memoryfs
from connectors.standalone.localregistry import LocalRegistry
from tests.node.conftest import (
    CHART,
    RELEASE_NS,
    TOKEN_SECONDS,
    Tenant,
    connector,
    tenant,
    token_in,
)  # fmt: skip
from tests.support.node import KUBELET_DIR, Node
from tests.support.waiting import settled

pytestmark = pytest.mark.timeout(600)

NS = "node-tokens"
CSI_ACCOUNT = f"system:serviceaccount:{RELEASE_NS}:connectors-csi"
DRIVER_STATE = Path("/var/lib/connectors-csi")


def claims(token: str) -> dict[str, Any]:
    found = reviews.unverified_claims(token)  # read from a file kubelet's token went into
    assert found is not None, "not a JWT"
    return found


def files_on_disk_holding(needle: bytes, roots: list[Path]) -> list[str]:
    """Files under `roots` on the disk's own filesystem (tmpfs mounts skipped) holding
    `needle`."""
    found = []
    for root in roots:
        disk = root.stat().st_dev
        for directory, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if Path(directory, d).lstat().st_dev == disk]
            for name in names:
                path = Path(directory, name)
                try:
                    info = path.lstat()
                    small = path.is_file() and info.st_size < 64 << 20
                    if info.st_dev == disk and small and needle in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    continue  # removed while we looked
    return found


def volume_target(node: Node, pod: str) -> Path:
    uid = node.cluster.kubectl(
        "get", "pod", pod, "-n", NS, "-o", "jsonpath={.metadata.uid}"
    ).stdout.strip()  # fmt: skip
    return KUBELET_DIR / "pods" / uid / "volumes" / "kubernetes.io~csi" / "pipconf" / "mount"


@pytest.fixture(scope="module")
def tokens(chart: Node, node_registry: LocalRegistry) -> Iterator[Tenant]:
    with tenant(chart, node_registry, NS) as made:
        yield made
    chart.cluster.kubectl("delete", "connectorclass", "pypi-renewal", check=False)


@pytest.mark.parametrize("namespace", ["--all-namespaces", NS, RELEASE_NS, "kube-system"])
def test_the_csi_driver_may_mint_no_token_and_read_no_secret(tokens: Tenant, namespace: str):
    where = [namespace] if namespace.startswith("--") else ["-n", namespace]
    for verb, resource in (("create", "serviceaccounts/token"), ("get", "secrets")):
        answer = tokens.node.cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={CSI_ACCOUNT}", *where, check=False
        )  # fmt: skip
        assert answer.stdout.strip() == "no", (verb, resource, namespace, answer.stdout)
    # What it does need, it has: reading Connectors to render their files.
    answer = tokens.node.cluster.kubectl(
        "auth", "can-i", "list", "connectors.connectors.alauda.io", f"--as={CSI_ACCOUNT}",
        "--all-namespaces", check=False,
    )  # fmt: skip
    assert answer.stdout.strip() == "yes"


def test_a_mounted_token_is_kubelets_for_the_pod_held_in_memory_and_dies_with_the_pod(
    tokens: Tenant,
):
    tokens.run_client("holder")
    token = token_in(tokens.pip_conf("holder"))
    body = claims(token)
    assert body["aud"] == [audiences.WORKLOAD]  # nothing the API server would accept
    assert body["sub"] == f"system:serviceaccount:{NS}:default"
    assert body["kubernetes.io"]["pod"]["name"] == "holder"
    assert body["exp"] - body["iat"] == TOKEN_SECONDS  # the chart's value, as installed
    target = volume_target(tokens.node, "holder")
    assert memoryfs.is_memory_backed(target)
    assert token.encode() in (target / "pip.conf").read_bytes()
    roots = [KUBELET_DIR, DRIVER_STATE]
    assert files_on_disk_holding(token.encode(), roots) == []
    assert settled(lambda: tokens.status(token) == 200, 30, "the holder's token works")

    tokens.kubectl("delete", "pod", "holder", "-n", NS, "--grace-period=1", "--wait=true")
    settled(lambda: not target.exists(), 60, "the volume's target removed")
    assert not memoryfs.is_memory_backed(target)
    assert files_on_disk_holding(token.encode(), roots) == []
    assert settled(lambda: tokens.status(token) == 401, 30, "the gone Pod's token refused")


def renewal_class(timeout: int) -> str:
    """The chart's pypi ConnectorClass under another name, with pip's timeout changed."""
    document = yaml.safe_load((CHART / "files" / "pypi-connectorclass.yaml").read_text())
    document["metadata"]["name"] = "pypi-renewal"
    for configuration in document["spec"]["configurations"]:
        for name, text in configuration["data"].items():
            configuration["data"][name] = text.replace("timeout = 30", f"timeout = {timeout}")
    return json.dumps(document)


def test_a_subpath_mounted_file_is_rewritten_while_its_container_runs(
    tokens: Tenant, node_registry: LocalRegistry
):
    # What a renewed token needs, shown without waiting for one: the class's template
    # changes, kubelet republishes, the driver rewrites the file the container already
    # holds (a subPath bind mount of one inode), and the running container reads it.
    tokens.kubectl("apply", "-f", "-", stdin=renewal_class(30))
    secret, resource = connector("renewed", node_registry).split("\n---\n")
    manifest = json.loads(resource)
    manifest["spec"]["connectorClassName"] = "pypi-renewal"
    tokens.kubectl("apply", "-n", NS, "-f", "-", stdin=f"{secret}\n---\n{json.dumps(manifest)}")
    settled(lambda: tokens.ready("renewed"), 60, "Connector renewed Ready")
    tokens.run_client("long-runner", "renewed")
    before = tokens.pip_conf("long-runner")
    assert "timeout = 30" in before
    restarts = tokens.kubectl(
        "get", "pod", "long-runner", "-n", NS,
        "-o", "jsonpath={.status.containerStatuses[0].restartCount}",
    )  # fmt: skip

    tokens.kubectl("apply", "-f", "-", stdin=renewal_class(45))
    after = str(settled(
        lambda: "timeout = 45" in (text := tokens.pip_conf("long-runner")) and text,
        240, "the running container reading the rewritten pip.conf",
    ))  # fmt: skip
    assert token_in(after) == token_in(before)  # only what changed was rewritten
    assert tokens.kubectl(
        "get", "pod", "long-runner", "-n", NS,
        "-o", "jsonpath={.status.containerStatuses[0].restartCount}",
    ) == restarts  # fmt: skip
    assert tokens.status(token_in(after)) == 200

"""`connectors csi` against a real API server, driven over real gRPC: csi-sanity, then the
seed's steps 3 and 4 with a kubelet stand-in (handing over Pod tokens as kubelet does),
real pip and twine in a Pod-like network namespace that resolves the seed's Service names,
renewed tokens written into the same inode, and the opt-in minting of tokens."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from connectors.auth import audiences, reviews
from connectors.csi import memoryfs
from connectors.standalone.demo import client_environment
from connectors.standalone.localregistry import LocalRegistry
from tests.conftest import require
from tests.support import leaks, netns, seed, testcluster, wire
from tests.support.components import DEPLOY, ComponentProcess, OperatorProcess, wait_for
from tests.support.kubelet import KubeletStandIn
from tests.support.testcluster import TestCluster
from tests.support.waiting import settled
from tests.support.wheels import make_wheel

NS = seed.NAMESPACE
HOST = "c-pypi-connector.connectors-pypi-demo.svc.cluster.local"
PROXY_URL = f"http://{HOST}"


def seed_pod(name: str, account: str = "default", token_expiration: str = "") -> str:
    """The seed's inspect-pypi-deploy Pod, as its "under the hood" section applies it,
    under another name and ServiceAccount, optionally with a token lifetime."""
    extra = f'\ntoken.expiration: "{token_expiration}"' if token_expiration else ""
    return seed.replace_lines(
        seed.INSPECT,
        {
            "name: inspect-pypi-deploy": f"name: {name}",
            "restartPolicy: Never": f"restartPolicy: Never\nserviceAccountName: {account}",
            'configuration.names: "pipconf"': f'configuration.names: "pipconf"{extra}',
            'configuration.names: "pypirc"': f'configuration.names: "pypirc"{extra}',
        },
    )


def claims(token: str) -> dict[str, Any]:
    found = reviews.unverified_claims(token)
    assert found is not None, "not a JWT"
    return found


def pip_conf_token(path: Path) -> str:
    parsed = configparser.ConfigParser()
    parsed.read_string(path.read_text())
    return parsed["global"]["index-url"].split("@")[0].rsplit(":", 1)[1]


@dataclass
class Node:
    cluster: TestCluster
    kubelet: KubeletStandIn
    socket: Path
    network: netns.PodNetwork
    registry: LocalRegistry
    proxy: ComponentProcess
    driver: ComponentProcess
    workdir: Path

    def in_pod(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.network.command(argv), env={**client_environment(), **env},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        leaks.record(f"in-pod {' '.join(argv[1:4])}", result.stdout + result.stderr)
        return result


def start_driver(
    cluster: TestCluster, workdir: Path, socket: Path, *extra: str
) -> ComponentProcess:
    driver = ComponentProcess(
        cluster, workdir, "csi", "connectors-csi", DEPLOY / "csi" / "rbac.yaml",
        "--endpoint", f"unix://{socket}", "--node-id", "node-1",
        "--state-dir", str(workdir / "state"), *extra,
    ).start()  # fmt: skip
    try:
        settled(socket.exists, 20, "the driver's socket")
    except AssertionError:
        raise AssertionError(f"the driver did not start:\n{driver.log()}") from None
    return driver


@pytest.fixture(scope="module")
def node(
    kube_cluster: TestCluster,
    pypi_registry: LocalRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Node]:
    require(netns.available(), "network namespaces (ip netns) are not available")
    workdir = tmp_path_factory.mktemp("csi")
    cluster = kube_cluster
    cluster.create_namespace(NS)
    cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed.step_2(
        address=pypi_registry.url, username=pypi_registry.username, password=pypi_registry.password,
    ))  # fmt: skip
    cluster.kubectl("apply", "-f", str(DEPLOY / "workload-roles.yaml"))
    cluster.kubectl(
        "create", "rolebinding", "default-publishes", "-n", NS,
        "--clusterrole=connectors-upload", f"--serviceaccount={NS}:default",
    )  # fmt: skip
    operator = OperatorProcess(cluster, workdir).start()
    network = netns.PodNetwork("connectors-pod", [HOST]).up()
    proxy = ComponentProcess(
        cluster, workdir, "proxy", "connectors-proxy", DEPLOY / "proxy" / "rbac.yaml",
        "--listen", f"{netns.HOST_ADDRESS}:80", "--metrics-listen", "127.0.0.1:0",
    ).start()  # fmt: skip
    socket = workdir / "plugin" / "csi.sock"
    driver = start_driver(cluster, workdir, socket)
    try:
        wait_for(cluster, NS, "pypi-connector")
        kubelet = KubeletStandIn(cluster, socket, workdir / "kubelet")
        yield Node(cluster, kubelet, socket, network, pypi_registry, proxy, driver, workdir)
        kubelet.close()
        left = [m for m in Path("/proc/self/mounts").read_text().splitlines() if str(workdir) in m]
        assert left == [], "volumes left mounted after every Pod was unpublished"
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s", check=False)
        driver.stop()
        proxy.stop()
        operator.stop()
        network.down()
    logs = [(n, p.log().encode()) for n, p in (("driver", driver), ("proxy", proxy))]
    needles = [pypi_registry.password.encode()]
    assert leaks.find_leaks(needles, [*logs, *leaks.SEEN]) == []
    assert "eyJ" not in driver.log(), "the driver logged a token"


def test_csi_sanity_passes_for_the_node_and_identity_services(node: Node, tmp_path: Path):
    binaries = testcluster.testbin()
    assert binaries is not None
    sanity = binaries / "csi-sanity"
    require(sanity.is_file(), "csi-sanity is not built: run scripts/build-testbin")
    # Skipped by name: every case that needs the Controller service (this plugin is
    # node-only, as inline ephemeral volumes need no controller), and "should remove
    # target path", which first creates a volume through the Controller's CreateVolume.
    skip = (
        "Controller Server|ListSnapshots|DeleteSnapshot|CreateSnapshot|ExpandVolume|"
        "ModifyVolume|VolumeHealth|should remove target path"
    )
    result = subprocess.run(
        [str(sanity), "--csi.endpoint", str(node.socket), "--csi.mountdir", str(tmp_path / "m"),
         "--csi.stagingdir", str(tmp_path / "s"), "-ginkgo.skip", skip, "-ginkgo.no-color"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    summary = next(line for line in result.stdout.splitlines() if "Passed" in line)
    assert " 0 Failed" in summary and "10 Passed" in summary, summary


def test_seed_pod_volumes_hold_the_seeds_files_with_a_pod_bound_token(node: Node):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("inspect-pypi-deploy"))
    mounted = node.kubelet.publish(NS, "inspect-pypi-deploy")
    pip_conf, pypirc = mounted["pipconf"] / "pip.conf", mounted["pypirc"] / ".pypirc"
    assert oct(pip_conf.stat().st_mode & 0o777) == oct(0o444) == oct(pypirc.stat().st_mode & 0o777)
    token = pip_conf_token(pip_conf)
    assert pip_conf.read_text() == (
        "[global]\n"
        f"index-url = http://connectors-pypi-demo-pypi-connector:{token}@{HOST}/simple/\n"
        "timeout = 30\n"
        f"trusted-host = {HOST}\n"
        "[install]\n"
        f"trusted-host = {HOST}\n"
    )
    other = pypirc.read_text().split("password = ")[1].strip()
    assert pypirc.read_text() == (
        "[distutils]\nindex-servers = connectors-pypi\n[connectors-pypi]\n"
        f"repository = {PROXY_URL}/\nusername = connectors-pypi-demo-pypi-connector\n"
        f"password = {other}\n"
    )
    body = claims(token)
    assert body["aud"] == [audiences.WORKLOAD]  # kubelet's token: not the API server's
    assert body["sub"] == f"system:serviceaccount:{NS}:default"
    assert body["exp"] - body["iat"] == 1800
    pod = node.kubelet.pod(NS, "inspect-pypi-deploy")
    assert body["kubernetes.io"]["pod"] == {
        "name": "inspect-pypi-deploy",
        "uid": pod["metadata"]["uid"],
    }
    assert node.registry.password not in pip_conf.read_text() + pypirc.read_text()
    assert memoryfs.is_memory_backed(mounted["pipconf"])
    assert memoryfs.is_memory_backed(mounted["pypirc"])
    records = "".join(p.read_text() for p in (node.workdir / "state").rglob("*.json"))
    assert records and token not in records  # the driver's disk holds no token


def test_twine_upload_and_pip_install_through_the_proxy_with_the_mounted_files(
    node: Node, tmp_path: Path
):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("jobs"))
    mounted = node.kubelet.publish(NS, "jobs")
    wheel = make_wheel(tmp_path / "dist", "sampleproject", "4.0.0")
    upload = node.in_pod(
        [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
         "--config-file", str(mounted["pypirc"] / ".pypirc"), "--repository", "connectors-pypi",
         str(wheel)], {},
    )  # fmt: skip
    assert upload.returncode == 0, upload.stdout + upload.stderr
    assert f"Uploading distributions to {PROXY_URL}/" in " ".join(upload.stdout.split())
    assert (node.registry.packages / wheel.name).is_file()
    install = node.in_pod(
        [sys.executable, "-m", "pip", "install", "--upgrade", "sampleproject", "--no-deps",
         "--no-cache-dir", "--disable-pip-version-check", "--target", str(tmp_path / "site")],
        {"PIP_CONFIG_FILE": str(mounted["pipconf"] / "pip.conf"), "COLUMNS": "250"},
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    assert (
        f"Looking in indexes: http://connectors-pypi-demo-pypi-connector:****@{HOST}/simple/"
        in install.stdout
    )
    # The file itself came through the proxy too (pip now names only the file it fetches).
    audit = [json.loads(line.split("connectors.audit: ", 1)[1])
             for line in node.proxy.log().splitlines() if "connectors.audit: " in line]  # fmt: skip
    assert any(
        entry["path"].endswith("/sampleproject-4.0.0-py3-none-any.whl")
        and entry["status"] == 200
        and entry["method"] == "GET"
        for entry in audit
    )
    assert "Successfully installed sampleproject-4.0.0" in install.stdout
    # pip download (and wheel, index) read trusted-host from [global] only: without it they
    # ignore a plain-http index that is not localhost, as the cluster's addresses are.
    download = node.in_pod(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "--dest", str(tmp_path / "fetched"),
         "sampleproject==4.0.0"],
        {"PIP_CONFIG_FILE": str(mounted["pipconf"] / "pip.conf")},
    )  # fmt: skip
    assert download.returncode == 0, download.stdout + download.stderr
    assert (tmp_path / "fetched" / wheel.name).is_file()


def test_the_token_dies_with_its_pod_and_unpublish_removes_everything(node: Node):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("short-lived"))
    mounted = node.kubelet.publish(NS, "short-lived")
    token = pip_conf_token(mounted["pipconf"] / "pip.conf")
    url = f"http://{netns.HOST_ADDRESS}/simple/"
    headers = {"Host": HOST, **wire.basic(token)}
    assert wire.request("GET", url, headers=headers).status == 200
    node.kubelet.unpublish(NS, "short-lived")
    assert not mounted["pipconf"].exists() and not mounted["pypirc"].exists()
    assert not memoryfs.is_memory_backed(mounted["pipconf"])
    node.cluster.kubectl("delete", "pod", "short-lived", "-n", NS, "--wait=true")
    settled(
        lambda: wire.request("GET", url, headers=headers).status != 200,
        40,
        "a deleted pod's token refused",
    )
    assert wire.request("GET", url, headers=headers).status == 401


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
CONNECTOR = {"connector.name": "pypi-connector"}


@pytest.mark.parametrize(
    ("attributes", "code", "message"),
    [
        ({"configuration.names": "pipconf"}, INVALID, "connector.name is required"),
        ({"connector.name": "ghost", "configuration.names": "pipconf"}, NOT_FOUND,
         "connector ghost not found in namespace connectors-pypi-demo"),
        ({**CONNECTOR, "configuration.names": "gradle"}, NOT_FOUND,
         "has no configuration 'gradle'"),
        ({**CONNECTOR, "configuration.names": "pipconf", "token.expiration": "1m"},
         INVALID, "between 10m and 24h"),
        ({**CONNECTOR, "configuration.names": "pipconf", "token.expiration": "10m"},
         grpc.StatusCode.FAILED_PRECONDITION,
         "shorter than the 1800 s tokens kubelet issues for this driver"),
    ],
)  # fmt: skip
def test_bad_volume_attributes_get_the_right_grpc_code(
    node: Node, attributes: dict[str, str], code: grpc.StatusCode, message: str
):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("attribute-checks"))
    pod = node.kubelet.pod(NS, "attribute-checks")
    volume = {"name": "bad", "csi": {"driver": "connectors-csi", "readOnly": True,
                                     "volumeAttributes": attributes}}  # fmt: skip
    with pytest.raises(grpc.RpcError) as caught:
        node.kubelet.node.NodePublishVolume(node.kubelet.request(pod, volume), timeout=30)
    assert caught.value.code() == code
    assert message in str(caught.value.details())


def test_a_connector_that_is_not_ready_is_failed_precondition(node: Node):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps({
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "Connector",
        "metadata": {"name": "broken"},
        "spec": {"connectorClassName": "pypi", "address": "http://127.0.0.1:1",
                 "auth": {"name": "basicAuth", "secretRef": {"name": "pypi-registry-secret"}}},
    }))  # fmt: skip
    wait_for(node.cluster, NS, "broken", status="False", reason="ConnectionFailed")
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("uses-broken"))
    pod = node.kubelet.pod(NS, "uses-broken")
    volume = {"name": "v", "csi": {"readOnly": True, "volumeAttributes": {
        "connector.name": "broken", "configuration.names": "pipconf"}}}  # fmt: skip
    with pytest.raises(grpc.RpcError) as caught:
        node.kubelet.node.NodePublishVolume(node.kubelet.request(pod, volume), timeout=30)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not Ready (ConnectionFailed" in str(caught.value.details())


def csi_volume(name: str, *attributes: dict[str, str], read_only: bool = True) -> dict[str, Any]:
    """A Pod's CSI volume of this driver with the attribute maps given, merged."""
    merged = {key: value for each in attributes for key, value in each.items()}
    return {"name": name, "csi": {"driver": "connectors-csi", "readOnly": read_only,
                                  "volumeAttributes": merged}}  # fmt: skip


def test_a_volume_that_is_not_read_only_is_refused(node: Node):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("writable"))
    pod = node.kubelet.pod(NS, "writable")
    attributes = {"connector.name": "pypi-connector", "configuration.names": "pipconf"}
    volume = csi_volume("rw", attributes, read_only=False)
    with pytest.raises(grpc.RpcError) as caught:
        node.kubelet.publish_volume(pod, volume)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "set readOnly: true" in str(caught.value.details())


def test_two_connectors_share_one_set_of_files_at_the_mount_root_with_the_built_in_files(
    node: Node,
):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps({
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "Connector",
        "metadata": {"name": "second"},
        "spec": {"connectorClassName": "pypi", "address": node.registry.url,
                 "auth": {"name": "basicAuth", "secretRef": {"name": "pypi-registry-secret"}}},
    }))  # fmt: skip
    wait_for(node.cluster, NS, "second")
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("two-connectors"))
    pod = node.kubelet.pod(NS, "two-connectors")
    target = node.kubelet.publish_volume(pod, csi_volume("both", {
        "connectors": f"pypi-connector, {NS}/second",
        "configuration.names": "pipconf, pypirc, !connector.status.proxyAddress"}))  # fmt: skip
    assert sorted(p.name for p in target.iterdir()) == [".pypirc", "context.token", "pip.conf"]
    token = (target / "context.token").read_text()
    parsed = configparser.ConfigParser()
    parsed.read_string((target / "pip.conf").read_text())
    second = f"c-second.{NS}.svc.cluster.local"
    assert parsed["global"]["index-url"] == f"http://{NS}-pypi-connector:{token}@{HOST}/simple/"
    assert parsed["global"]["extra-index-url"].split() == [
        f"http://{NS}-second:{token}@{second}/simple/"
    ]
    assert parsed["global"]["trusted-host"].split() == [HOST, second]
    pypirc = configparser.ConfigParser()
    pypirc.read_string((target / ".pypirc").read_text())
    assert pypirc["distutils"]["index-servers"].split() == [
        "connectors-pypi", "connectors-pypi-second"
    ]  # fmt: skip
    assert pypirc["connectors-pypi-second"]["repository"] == f"http://{second}/"


def test_without_configuration_names_only_the_built_in_files_are_written(node: Node):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("built-in-only"))
    pod = node.kubelet.pod(NS, "built-in-only")
    target = node.kubelet.publish_volume(
        pod, csi_volume("plain", {"connector.name": "pypi-connector"})
    )  # fmt: skip
    assert sorted(p.name for p in target.iterdir()) == [
        "connector.status.proxyAddress", "context.token"
    ]  # fmt: skip
    assert (target / "connector.status.proxyAddress").read_text() == PROXY_URL
    token = (target / "context.token").read_text()
    assert claims(token)["aud"] == [audiences.WORKLOAD]


def connector_of_a_class(
    node: Node, name: str, configurations: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ConnectorClass `name` with these configurations (no auth, no probes), a Ready
    Connector `name` of it, and a seed-style Pod `<name>-user`: that Pod, to mount for."""
    node.cluster.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "ConnectorClass",
        "metadata": {"name": name},
        "spec": {"address": {"name": "address", "type": "string"},
                 "configurations": configurations},
    }))  # fmt: skip
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps({
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "Connector",
        "metadata": {"name": name},
        "spec": {"connectorClassName": name, "address": node.registry.url},
    }))  # fmt: skip
    wait_for(node.cluster, NS, name)
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod(f"{name}-user"))
    return node.kubelet.pod(NS, f"{name}-user")


def test_configuration_params_of_the_mount_reach_the_templates(node: Node):
    pod = connector_of_a_class(node, "with-params", [{
        "name": "settings", "params": [{"name": "retries", "default": "3"}],
        "data": {"settings.ini": "retries = {{ params.retries }}\n"},
    }])  # fmt: skip
    attributes = {"connector.name": "with-params", "configuration.names": "settings"}
    default = node.kubelet.publish_volume(pod, csi_volume("default", attributes))
    assert (default / "settings.ini").read_text() == "retries = 3\n"
    chosen = node.kubelet.publish_volume(pod, csi_volume("chosen", attributes, {
        "configuration.params": '{"settings": {"retries": 7}}'}))  # fmt: skip
    assert (chosen / "settings.ini").read_text() == "retries = 7\n"


def test_a_class_whose_files_cannot_be_written_fails_the_mount_and_leaves_nothing(node: Node):
    # A ConnectorClass author is trusted with templates, not with the node: files that
    # cannot be written whole are refused before anything is mounted, and an error never
    # quotes the token a template indexed by.
    pod = connector_of_a_class(node, "hostile", [
        {"name": "clash", "data": {"x": "1", "x/y": "2"}},
        {"name": "quoting", "data": {"q": "{{ params[context.token] }}"}},
    ])  # fmt: skip
    for configuration, wanted in (("clash", "both a file and a directory"),
                                  ("quoting", "<token>")):  # fmt: skip
        volume = csi_volume(configuration, {
            "connector.name": "hostile", "configuration.names": configuration})  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            node.kubelet.publish_volume(pod, volume)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert wanted in str(caught.value.details())
        assert "eyJ" not in str(caught.value.details())
        assert not memoryfs.is_memory_backed(node.kubelet.target(pod, configuration))


def test_another_namespaces_connector_needs_a_grant_and_its_existence_is_not_told(node: Node):
    elsewhere = "csi-elsewhere"
    node.cluster.create_namespace(elsewhere)
    node.cluster.kubectl("apply", "-n", elsewhere, "-f", "-", stdin=seed.step_2(
        address=node.registry.url, username=node.registry.username,
        password=node.registry.password,
    ))  # fmt: skip
    wait_for(node.cluster, elsewhere, "pypi-connector")
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("visitor"))
    pod = node.kubelet.pod(NS, "visitor")

    def mount(connector: str) -> Path:
        return node.kubelet.publish_volume(pod, csi_volume(connector.replace("/", "-"), {
            "connectors": connector, "configuration.names": "pipconf"}))  # fmt: skip

    for connector in (f"{elsewhere}/pypi-connector", f"{elsewhere}/no-such-connector"):
        with pytest.raises(grpc.RpcError) as caught:
            mount(connector)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"ServiceAccount {NS}/default may not use connector {connector}" in str(
            caught.value.details()
        )
    node.cluster.kubectl(
        "create", "rolebinding", "visitors-download", "-n", elsewhere,
        "--clusterrole=connectors-download", f"--serviceaccount={NS}:default",
    )  # fmt: skip
    target = settled(
        lambda: _mounted_or_none(lambda: mount(f"{elsewhere}/pypi-connector")), 20,
        "the mount allowed once the grant exists",
    )  # fmt: skip
    assert (
        f"@c-pypi-connector.{elsewhere}.svc.cluster.local/simple/"
        in (target / "pip.conf").read_text()
    )
    node.cluster.kubectl("delete", "namespace", elsewhere, "--wait=false")


def test_a_kube_public_connector_is_cluster_level_and_mounts_in_any_namespace(node: Node):
    node.cluster.kubectl("apply", "-n", "kube-public", "-f", "-", stdin=seed.step_2(
        address=node.registry.url, username=node.registry.username,
        password=node.registry.password,
    ))  # fmt: skip
    wait_for(node.cluster, "kube-public", "pypi-connector")
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("cluster-level-user"))
    pod = node.kubelet.pod(NS, "cluster-level-user")
    target = node.kubelet.publish_volume(pod, csi_volume("shared", {
        "connector.name": "pypi-connector", "connector.namespace": "kube-public",
        "configuration.names": "pipconf"}))  # fmt: skip
    assert (
        "@c-pypi-connector.kube-public.svc.cluster.local/simple/"
        in (target / "pip.conf").read_text()
    )
    node.cluster.kubectl("delete", "connector", "pypi-connector", "-n", "kube-public")


def _mounted_or_none(mount: Callable[[], Path]) -> Path | None:
    try:
        return mount()
    except grpc.RpcError:
        return None


def test_a_renewed_token_reaches_the_inode_a_subpath_mount_holds_and_still_opens_the_proxy(
    node: Node,
):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("renewing"))
    pip_conf = node.kubelet.publish(NS, "renewing")["pipconf"] / "pip.conf"
    first = pip_conf_token(pip_conf)
    with pip_conf.open() as pinned:  # what kubelet bind-mounts for subPath: this inode
        stamp = pip_conf.stat().st_mtime_ns
        node.kubelet.republish(NS, "renewing")  # the same token: nothing is rewritten
        assert pip_conf.stat().st_mtime_ns == stamp
        node.kubelet.renew_tokens()
        node.kubelet.republish(NS, "renewing")
        renewed = pip_conf_token(pip_conf)
        assert renewed != first
        assert renewed in pinned.read()
    url = f"http://{netns.HOST_ADDRESS}/simple/"
    reply = wire.request("GET", url, headers={"Host": HOST, **wire.basic(renewed)})
    assert reply.status == 200


def test_without_a_token_from_kubelet_or_the_right_to_mint_a_publish_says_what_is_missing(
    node: Node, tmp_path: Path
):
    node.cluster.kubectl("apply", "-n", NS, "-f", "-", stdin=seed_pod("tokenless"))
    kubelet = KubeletStandIn(node.cluster, node.socket, tmp_path, token_requests=[])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            kubelet.publish(NS, "tokenless")
    finally:
        kubelet.close()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "must list it in spec.tokenRequests" in str(caught.value.details())


def mint_permission(cluster: TestCluster, allowed: bool) -> None:
    """The chart's CSI RBAC, rendered with csi.mintTokens as given, applied."""
    binaries = testcluster.testbin()
    assert binaries is not None
    rendered = subprocess.run(
        [str(binaries / "helm"), "template", "connectors", str(DEPLOY / "helm" / "connectors"),
         "--namespace", "connectors-system", "--kube-version", "1.36.0",
         "--show-only", "templates/csi-rbac.yaml",
         "--set", f"csi.mintTokens={'true' if allowed else 'false'}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", stdin=rendered)


def test_a_driver_allowed_to_mint_honours_a_shorter_token_expiration_and_renews_it(
    node: Node, tmp_path: Path
):
    # A second driver that may mint (the chart's csi.mintTokens), whose minted tokens are
    # due for renewal after 0.2% of their 10-minute life.
    socket = tmp_path / "fast" / "csi.sock"
    fast = start_driver(
        node.cluster, tmp_path, socket, "--mint-tokens", "--refresh-fraction", "0.002"
    )  # fmt: skip
    mint_permission(node.cluster, allowed=True)  # after the start, which applies the default
    kubelet = KubeletStandIn(node.cluster, socket, tmp_path / "kubelet")
    try:
        node.cluster.kubectl("create", "serviceaccount", "refresher", "-n", NS)
        node.cluster.kubectl(
            "apply", "-n", NS, "-f", "-",
            stdin=seed_pod("refreshing", "refresher", token_expiration="10m"),
        )  # fmt: skip
        pip_conf = kubelet.publish(NS, "refreshing")["pipconf"] / "pip.conf"
        body = claims(pip_conf_token(pip_conf))
        assert body["exp"] - body["iat"] == 600
        assert body["aud"] == [PROXY_URL]  # minted for this connector alone
        seen = {pip_conf_token(pip_conf)}

        def renewed() -> str | None:
            kubelet.republish(NS, "refreshing")
            token = pip_conf_token(pip_conf)
            return None if token in seen else token

        with pip_conf.open() as pinned:
            for _ in range(3):  # each once the refresh fraction of the last one has passed
                seen.add(settled(renewed, 20, "a republish renewing the token"))
            pinned.seek(0)
            assert pip_conf_token(pip_conf) in pinned.read()
        assert len(seen) == 4  # the first token and three renewed ones

        # With no token to be had (its ServiceAccount is gone), a republish keeps the old
        # files and still answers OK, so kubelet does not tear the mount down.
        before = pip_conf.read_text()
        node.cluster.kubectl("delete", "serviceaccount", "refresher", "-n", NS)

        def failed_to_renew() -> bool:
            kubelet.republish(NS, "refreshing")
            return "cannot refresh its files now" in fast.log()

        settled(failed_to_renew, 20, "a republish finding no token to be had")
        assert pip_conf.read_text() == before
    finally:
        kubelet.close()
        fast.stop()
        mint_permission(node.cluster, allowed=False)

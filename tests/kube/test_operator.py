"""`connectors operator` on a real kube-apiserver against a real pypiserver: the seed's
step 2 becomes Ready, and every failure the design names shows as its condition reason."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.standalone import localregistry
from connectors.standalone.localregistry import LocalRegistry
from tests.support import leaks, seed
from tests.support.components import OperatorProcess, condition, connector, wait_for
from tests.support.standalone import connector_manifest, secret_manifest
from tests.support.testcluster import TestCluster
from tests.support.waiting import holds, settled

NS = seed.NAMESPACE
PASSWORDS: list[str] = []


@pytest.fixture(scope="module")
def registry(pypi_registry: LocalRegistry) -> LocalRegistry:
    PASSWORDS.append(pypi_registry.password)
    return pypi_registry


@pytest.fixture(scope="module")
def operator(
    kube_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    kube_cluster.kubectl("create", "namespace", NS, check=False)
    process = OperatorProcess(kube_cluster, tmp_path_factory.mktemp("operator")).start()
    yield process
    scan_for_leaks(kube_cluster, process)
    # Deleting the namespace with everything in it finishes: nothing holds a finalizer.
    kube_cluster.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")
    process.stop()


def scan_for_leaks(cluster: TestCluster, process: OperatorProcess) -> None:
    """No registry password in the operator's log, any Connector, or any Event."""
    places = [
        ("operator log", process.log().encode()),
        ("connectors", cluster.kubectl("get", "connectors", "-A", "-o", "json").stdout.encode()),
        ("events", cluster.kubectl("get", "events", "-A", "-o", "json").stdout.encode()),
        *leaks.SEEN,
    ]
    needles = [p.encode() for p in PASSWORDS]
    needles += [base64.b64encode(p.encode()) for p in PASSWORDS]
    assert leaks.find_leaks(needles, places) == []


def apply(cluster: TestCluster, *documents: str, namespace: str = NS) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin="\n---\n".join(documents))


def test_seed_step_2_becomes_ready_with_its_proxy_address_and_service(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(
        kube_cluster,
        seed.step_2(address=registry.url, username=registry.username, password=registry.password),
    )
    body = wait_for(kube_cluster, NS, "pypi-connector")
    url = "http://c-pypi-connector.connectors-pypi-demo.svc.cluster.local"
    assert body["status"]["proxy"]["httpAddress"] == {"url": url, "audience": url}
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    kinds = {c["type"]: c["status"] for c in body["status"]["conditions"]}
    # Informational: Unknown while the registry lists no project, True once it does.
    assert kinds.pop("LinksCovered") in ("True", "Unknown")
    assert kinds == {
        "ConnectorClassReady": "True", "SecretReady": "True", "LivenessReady": "True",
        "AuthReady": "True", "ProxyServiceReady": "True", "Ready": "True",
    }  # fmt: skip

    header, row = kube_cluster.kubectl(
        "get", "connector", "pypi-connector", "-n", NS
    ).stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "ADDRESS", "READY", "REASON", "AGE"]
    assert row.split()[:4] == ["pypi-connector", "pypi", registry.url, "True"]

    service = kube_cluster.kubectl_json("get", "service", "c-pypi-connector", "-n", NS)
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == (
        "connectors-proxy.connectors-system.svc.cluster.local"
    )
    (owner,) = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Connector", "pypi-connector", body["metadata"]["uid"],
    )  # fmt: skip


def test_the_builtin_pypi_class_is_installed_by_the_operator(
    kube_cluster: TestCluster, operator: OperatorProcess
):
    settled(
        lambda: kube_cluster.kubectl("get", "connectorclass", "pypi", check=False).returncode == 0,
        30,
        "the built-in class installed",
    )
    spec = kube_cluster.kubectl_json("get", "connectorclass", "pypi")["spec"]
    assert [c["name"] for c in spec["configurations"]] == [
        "pipconf",
        "pypirc",
        "uvtoml",
        "poetry",
        "pdm",
        "hatch",
        "netrc",
    ]


def test_a_wrong_password_fails_auth_until_the_secret_is_fixed(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(
        kube_cluster,
        secret_manifest("wrong-secret", registry.username, "not-the-password"),
        connector_manifest("wrong-password", registry.url, secret="wrong-secret"),
    )
    body = wait_for(
        kube_cluster, NS, "wrong-password", status="False", reason="AuthenticationFailed"
    )
    assert condition(body, "AuthReady")["reason"] == "AuthenticationFailed"
    assert "fix the username or password in the Secret" in condition(body, "AuthReady")["message"]
    apply(kube_cluster, secret_manifest("wrong-secret", registry.username, registry.password))
    wait_for(kube_cluster, NS, "wrong-password", timeout=15)


def test_a_missing_secret_is_secret_not_found_until_it_appears(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(kube_cluster, connector_manifest("no-secret", registry.url, secret="later-secret"))
    body = wait_for(kube_cluster, NS, "no-secret", status="False", reason="SecretNotFound")
    assert condition(body, "SecretReady")["message"] == (
        f"Secret later-secret not found in namespace {NS}: "
        "create it or fix spec.auth.secretRef.name"
    )
    apply(kube_cluster, secret_manifest("later-secret", registry.username, registry.password))
    wait_for(kube_cluster, NS, "no-secret", timeout=15)


def test_a_secret_ref_in_alaudas_object_reference_shape_names_only_the_own_namespace(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    def with_reference(name: str, namespace: str) -> str:
        document = json.loads(connector_manifest(name, registry.url, secret="ref-secret"))
        document["spec"]["auth"]["secretRef"] = {
            "apiVersion": "v1", "kind": "Secret", "name": "ref-secret", "namespace": namespace,
        }  # fmt: skip
        return json.dumps(document)

    apply(
        kube_cluster,  # kubectl's strict validation refuses unknown fields
        secret_manifest("ref-secret", registry.username, registry.password),
        with_reference("ref-own", NS),
        with_reference("ref-elsewhere", "default"),
    )
    wait_for(kube_cluster, NS, "ref-own")
    body = wait_for(kube_cluster, NS, "ref-elsewhere", status="False", reason="SecretInvalid")
    assert condition(body, "SecretReady")["message"] == (
        f"spec.auth.secretRef.namespace is default, but a Connector may use only Secrets of "
        f"its own namespace ({NS}): create the Secret there and remove the namespace field"
    )


def test_basic_auth_without_a_secret_connects_a_registry_that_needs_none(
    kube_cluster: TestCluster, operator: OperatorProcess, tmp_path: Path
):
    with localregistry.pypiserver(tmp_path, authenticate="update") as anonymous:
        document = json.loads(connector_manifest("anonymous", anonymous.url, secret=None))
        document["spec"]["auth"] = {"name": "basicAuth"}  # Alauda's way to say "no Secret"
        apply(kube_cluster, json.dumps(document))
        body = wait_for(kube_cluster, NS, "anonymous")
    assert condition(body, "SecretReady")["reason"] == "SecretOptional"


def test_classes_in_alaudas_shape_apply_and_say_in_kubectl_get_whether_they_are_served(
    kube_cluster: TestCluster, operator: OperatorProcess
):
    unsupported = {
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "ConnectorClass",
        "metadata": {"name": "alauda-shaped"},
        "spec": {
            "address": {"name": "address", "type": "string"},
            "addressExtensions": [{"name": "files", "type": "string"}],
            "auth": {"types": [{"name": "basicAuth", "secretType": "kubernetes.io/basic-auth",
                                "displayName": "Basic", "generator": {"rego": "package proxy"}}]},
            "livenessProbe": {"http": {"path": "/", "disableRedirect": True, "scheme": "https"}},
            "authProbes": [{"authName": "basicAuth", "params": [{"name": "repository"}],
                            "probe": {"http": {"path": "/simple/", "method": "GET"}}}],
            "proxy": {"ref": {"kind": "Service", "name": "connectors-proxy-service",
                              "namespace": "connectors-system"}},
            "configurations": [{"name": "pipconf", "annotations": {"note": "x"},
                                "data": {"pip.conf": "[global]\n"}}],
        },
    }  # fmt: skip
    apply(kube_cluster, json.dumps(unsupported))  # kubectl's strict validation

    def rows() -> list[list[str]] | None:
        out = kube_cluster.kubectl("get", "connectorclass", "pypi", "alauda-shaped").stdout
        found = {line.split()[0]: line.split() for line in out.splitlines()}
        written = len(found.get("alauda-shaped", ())) == 4 and len(found.get("pypi", ())) == 3
        return list(found.values()) if written else None  # a Ready status, no Reason

    listed = settled(rows, 30, "both classes with a Ready column")
    assert listed[0] == ["NAME", "READY", "REASON", "AGE"]
    assert listed[1][:2] == ["pypi", "True"]
    assert listed[2][:3] == ["alauda-shaped", "False", "UnsupportedFeature"]
    status = kube_cluster.kubectl_json("get", "connectorclass", "alauda-shaped")["status"]
    message = condition({"status": status}, "Ready")["message"]
    assert "spec.auth.types[basicAuth].generator (Rego)" in message
    assert "spec.livenessProbe.http.scheme" in message
    # Its Connectors say why too, rather than failing later at a Pod's mount.
    apply(kube_cluster, connector_manifest("of-alauda-shape", "http://127.0.0.1:1",
                                           secret=None, class_name="alauda-shaped"))  # fmt: skip
    body = wait_for(
        kube_cluster, NS, "of-alauda-shape", status="False", reason="UnsupportedFeature"
    )
    assert condition(body, "ConnectorClassReady")["message"].startswith(
        "ConnectorClass alauda-shaped is not Ready: not supported by this project:"
    )
    # `kubectl get connectors` lists Connectors only (a CRD category named "connectors"
    # would pull the classes in too); `kubectl get alauda` lists both, as with Alauda's.
    names = kube_cluster.kubectl("get", "connectors", "-n", NS, "-o", "name").stdout.split()
    assert names and all(n.startswith("connector.connectors.alauda.io/") for n in names)
    both = kube_cluster.kubectl("get", "alauda", "-n", NS, "-o", "name").stdout.split()
    assert "connectorclass.connectors.alauda.io/alauda-shaped" in both


def test_a_class_asking_for_the_path_resolver_gives_its_connectors_a_path_form_address(
    kube_cluster: TestCluster, operator: OperatorProcess
):
    apply(kube_cluster, json.dumps({
        "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "ConnectorClass",
        "metadata": {"name": "by-path",
                     "annotations": {"connectors.cpaas.io/proxy-resolver": "path"}},
        "spec": {"address": {"name": "address", "type": "string"}},
    }))  # fmt: skip
    apply(kube_cluster, connector_manifest("routed-by-path", "http://127.0.0.1:1",
                                           secret=None, class_name="by-path"))  # fmt: skip
    body = wait_for(kube_cluster, NS, "routed-by-path")
    address = body["status"]["proxy"]["httpAddress"]
    assert address["url"] == (
        "http://connectors-proxy.connectors-system.svc.cluster.local"
        f"/namespaces/{NS}/connectors/routed-by-path"
    )
    # Tokens minted for it still name the host form, the audience the proxy derives.
    assert address["audience"] == f"http://c-routed-by-path.{NS}.svc.cluster.local"


def test_an_unknown_class_is_connector_class_not_found(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(kube_cluster, connector_manifest("no-class", registry.url, class_name="maven"))
    body = wait_for(kube_cluster, NS, "no-class", status="False", reason="ConnectorClassNotFound")
    assert condition(body, "ConnectorClassReady")["status"] == "False"


def test_an_unreachable_registry_is_connection_failed(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    closed = f"http://127.0.0.1:{localregistry.free_port()}"
    apply(
        kube_cluster,
        secret_manifest("down-secret", registry.username, registry.password),
        connector_manifest("down", closed, secret="down-secret"),
    )
    body = wait_for(kube_cluster, NS, "down", status="False", reason="ConnectionFailed")
    assert condition(body, "LivenessReady")["message"].startswith(f"cannot reach {closed}/simple/")


def test_a_registry_going_down_and_coming_back_flips_ready_within_an_interval(
    kube_cluster: TestCluster, operator: OperatorProcess, tmp_path: Path
):
    port = localregistry.free_port()
    with localregistry.pypiserver(tmp_path / "a", port=port) as flaky:
        PASSWORDS.append(flaky.password)
        apply(
            kube_cluster,
            secret_manifest("flaky-secret", flaky.username, flaky.password),
            connector_manifest("flaky", flaky.url, secret="flaky-secret"),
        )
        wait_for(kube_cluster, NS, "flaky")
    wait_for(kube_cluster, NS, "flaky", status="False", reason="ConnectionFailed", timeout=10)
    with localregistry.pypiserver(tmp_path / "b", port=port, password=flaky.password):
        wait_for(kube_cluster, NS, "flaky", timeout=10)
    events = kube_cluster.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=flaky",
        "-o", "jsonpath={range .items[*]}{.type} {.reason}{'\\n'}{end}",
    ).stdout.splitlines()  # fmt: skip
    assert "Warning ConnectionFailed" in events and "Normal Ready" in events


def test_deleting_a_connector_removes_its_service(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(
        kube_cluster,
        secret_manifest("short-secret", registry.username, registry.password),
        connector_manifest("short-lived", registry.url, secret="short-secret"),
    )
    wait_for(kube_cluster, NS, "short-lived")
    kube_cluster.kubectl(
        "delete", "connector", "short-lived", "-n", NS, "--wait=true", "--timeout=20s"
    )
    settled(
        lambda: not service_exists(kube_cluster, "c-short-lived"),
        30,
        "the Service of a deleted Connector garbage-collected",
    )


def service_exists(cluster: TestCluster, name: str) -> bool:
    """Whether the Service exists; an API error other than NotFound fails the test at once
    (a RuntimeError, which no wait takes for "not yet")."""
    found = cluster.kubectl("get", "service", name, "-n", NS, check=False)
    if found.returncode != 0 and "NotFound" not in found.stderr:
        raise RuntimeError(found.stderr)
    return found.returncode == 0


def test_a_restarted_operator_converges_without_rewriting_anything(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(
        kube_cluster,
        seed.step_2(address=registry.url, username=registry.username, password=registry.password),
    )
    before = wait_for(kube_cluster, NS, "pypi-connector")
    led = operator.log().count("leading as")  # the log file outlives a restart
    operator.stop()
    operator.start()
    settled(lambda: operator.log().count("leading as") > led, 30, "the restarted operator leading")

    # Asked through three re-probe intervals (2 s) of the new process: nothing rewritten.
    def written(found: dict[str, Any]) -> tuple[str, Any]:
        return found["metadata"]["resourceVersion"], found["status"]

    holds(lambda: written(connector(kube_cluster, NS, "pypi-connector")), written(before), 6)
    services = kube_cluster.kubectl(
        "get", "services", "-n", NS, "-l", "connectors.alauda.io/connector=pypi-connector",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    assert services == ["service/c-pypi-connector"]
    # Nothing rewritten must mean "nothing needed", not "nobody there": the restarted
    # process is running and acts on the next change.
    assert operator.process is not None and operator.process.poll() is None
    kube_cluster.kubectl("delete", "service", "c-pypi-connector", "-n", NS)
    settled(
        lambda: service_exists(kube_cluster, "c-pypi-connector"),
        20,
        "the restarted operator acting on a change",
    )


def test_a_deleted_service_is_recreated(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry
):
    apply(
        kube_cluster,
        seed.step_2(address=registry.url, username=registry.username, password=registry.password),
    )
    wait_for(kube_cluster, NS, "pypi-connector")
    kube_cluster.kubectl("delete", "service", "c-pypi-connector", "-n", NS)
    settled(
        lambda: service_exists(kube_cluster, "c-pypi-connector"),
        20,
        "the deleted Service recreated",
    )


def test_a_second_replica_waits_and_takes_over_when_the_leader_stops(
    kube_cluster: TestCluster, operator: OperatorProcess, registry: LocalRegistry, tmp_path: Path
):
    standby = OperatorProcess(kube_cluster, tmp_path).start()
    try:
        settled(lambda: "another replica leads" in standby.log(), 20, "the standby waiting")
        operator.stop()
        apply(
            kube_cluster,
            secret_manifest("takeover-secret", registry.username, registry.password),
            connector_manifest("takeover", registry.url, secret="takeover-secret"),
        )
        # The stopped leader hands its lease back; the standby takes it and leads.
        wait_for(kube_cluster, NS, "takeover", timeout=45)
        lease = kube_cluster.kubectl_json(
            "get", "lease", "connectors-operator", "-n", "connectors-system"
        )
        holder = lease["spec"]["holderIdentity"]
        assert f"leading as {holder} " in standby.log()
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        standby.stop()
        operator.start()

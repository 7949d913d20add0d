"""The CRDs on a real kube-apiserver: the seed's manifests apply verbatim, bad ones do not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from connectors.api import crds
from tests.support import seed
from tests.support.standalone import CONNECTORS
from tests.support.testcluster import TestCluster

CRDS_FILE = Path(__file__).parents[2] / "deploy" / "crds" / "connectors.alauda.io.yaml"


def connector(name: str, spec: object) -> str:
    return json.dumps(
        {
            "apiVersion": "connectors.alauda.io/v1alpha1",
            "kind": "Connector",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.fixture(scope="module")
def seed_namespace(kube_cluster: TestCluster) -> str:
    # Start from nothing, whatever earlier modules left in the seed's namespace.
    kube_cluster.kubectl("delete", "ns", seed.NAMESPACE, "--ignore-not-found", "--wait=true")
    kube_cluster.kubectl("create", "ns", seed.NAMESPACE)  # step 1, as the seed types it
    return seed.NAMESPACE


def test_committed_crds_are_what_the_model_generates():
    assert CRDS_FILE.read_text() == crds.crds_yaml(), (
        "deploy/crds drifted from the model: run "
        "`connectors install crds --print > deploy/crds/connectors.alauda.io.yaml`"
    )


def test_seed_step_2_applies_verbatim_and_lists_with_the_seed_columns(
    kube_cluster: TestCluster, seed_namespace: str
):
    applied = kube_cluster.kubectl("apply", "-n", seed_namespace, "-f", "-", stdin=seed.step_2())
    assert applied.stdout.split("\n")[:2] == [
        "secret/pypi-registry-secret created",
        "connector.connectors.alauda.io/pypi-connector created",
    ]
    table = kube_cluster.kubectl("get", "connector", "pypi-connector", "-n", seed_namespace)
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "ADDRESS", "READY", "REASON", "AGE"]
    assert row.split()[:3] == ["pypi-connector", "pypi", seed.SEED_ADDRESS]


def test_ready_and_reason_columns_come_from_the_ready_condition(
    kube_cluster: TestCluster, seed_namespace: str
):
    kube_cluster.kubectl("apply", "-n", seed_namespace, "-f", "-", stdin=seed.step_2())
    status = {
        "status": {
            "conditions": [
                {"type": "SecretReady", "status": "True", "reason": "", "message": ""},
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "AuthenticationFailed",
                    "message": "refused",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                },
            ],
            "observedGeneration": 1,
        }
    }
    kube_cluster.kubectl(
        "patch", "connector", "pypi-connector", "-n", seed_namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    row = kube_cluster.kubectl("get", "connector", "pypi-connector", "-n", seed_namespace)
    assert row.stdout.splitlines()[1].split()[3:5] == ["False", "AuthenticationFailed"]


@pytest.mark.parametrize(
    ("spec", "complaints"),
    [
        ({"address": "https://r.example.com"}, ["spec.connectorClassName: Required value"]),
        (
            {"connectorClassName": "pypi", "address": 5},
            ['spec.address: Invalid value: "integer"', "must be of type string"],
        ),
        (
            {"connectorClassName": "pypi", "address": "https://r", "auth": {"secretRef": {}}},
            ["spec.auth.secretRef.name: Required value"],
        ),
        (
            {"connectorClassName": "pypi", "address": "https://r", "params": [{"value": "x"}]},
            ["spec.params[0].name: Required value"],
        ),
        (
            {"connectorClassName": ["pypi"], "address": "https://r"},
            ['spec.connectorClassName: Invalid value: "array"'],
        ),
    ],
)
def test_invalid_connectors_are_refused_naming_the_field(
    kube_cluster: TestCluster, seed_namespace: str, spec: object, complaints: list[str]
):
    result = kube_cluster.kubectl(
        "apply", "-n", seed_namespace, "-f", "-", stdin=connector("bad", spec), check=False
    )
    assert result.returncode != 0
    for complaint in complaints:
        assert complaint in result.stderr
    missing = kube_cluster.kubectl("get", "connector", "bad", "-n", seed_namespace, check=False)
    assert "NotFound" in missing.stderr


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("spec.address", {"address": "https://mirror-user:Addr3ssPassw0rd@r.example.com/simple"}),
        (
            "spec.addressExtensions[0].value",
            {
                "address": "https://r.example.com",
                "addressExtensions": [
                    {"name": "files", "value": "https://mirror-user:Addr3ssPassw0rd@f.example.com"}
                ],
            },
        ),
    ],
)
def test_a_connector_whose_address_carries_credentials_is_refused_without_echoing_them(
    kube_cluster: TestCluster, seed_namespace: str, field: str, spec: dict[str, object]
):
    result = kube_cluster.kubectl(
        "apply", "-n", seed_namespace, "-f", "-", check=False,
        stdin=connector("with-credentials", {"connectorClassName": "pypi", **spec}),
    )  # fmt: skip
    assert result.returncode != 0
    assert f"{field}: Forbidden: must not carry credentials" in result.stderr
    assert "Addr3ssPassw0rd" not in result.stderr and "mirror-user" not in result.stderr
    missing = kube_cluster.kubectl(
        "get", "connector", "with-credentials", "-n", seed_namespace, check=False
    )
    assert "NotFound" in missing.stderr


def test_a_condition_with_an_unknown_status_is_refused(
    kube_cluster: TestCluster, seed_namespace: str
):
    kube_cluster.kubectl("apply", "-n", seed_namespace, "-f", "-", stdin=seed.step_2())
    bad = {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}
    result = kube_cluster.kubectl(
        "patch", "connector", "pypi-connector", "-n", seed_namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(bad), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'status.conditions[0].status: Unsupported value: "Maybe"' in result.stderr


def test_the_builtin_pypi_class_applies_as_a_connectorclass(kube_cluster: TestCluster):
    class_file = Path(__file__).parents[2] / "src/connectors/classes/pypi.yaml"
    kube_cluster.kubectl("apply", "--server-side", "-f", str(class_file))
    applied = kube_cluster.kubectl_json("get", "connectorclass", "pypi")
    spec = applied["spec"]
    assert isinstance(spec, dict)
    names = [c["name"] for c in spec["configurations"]]
    assert names == ["pipconf", "pypirc", "uvtoml", "poetry", "pdm", "hatch", "netrc"]
    assert spec["proxy"] == {"protocol": "pypi"}


def test_install_crds_again_changes_nothing_and_supports_a_dry_run(kube_cluster: TestCluster):
    def install(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONNECTORS, "install", "crds", "--kubeconfig", str(kube_cluster.kubeconfig), *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    before = kube_cluster.kubectl_json("get", "crd", "connectors.connectors.alauda.io")
    again, dry = install(), install("--dry-run")
    assert (again.returncode, dry.returncode) == (0, 0), again.stderr + dry.stderr
    assert dry.stdout.splitlines() == [
        "customresourcedefinition.apiextensions.k8s.io/connectors.connectors.alauda.io "
        "applied (server dry run)",
        "customresourcedefinition.apiextensions.k8s.io/connectorclasses.connectors.alauda.io "
        "applied (server dry run)",
    ]
    after = kube_cluster.kubectl_json("get", "crd", "connectors.connectors.alauda.io")
    assert before["metadata"]["generation"] == after["metadata"]["generation"]


def test_install_against_an_unreachable_cluster_is_a_clear_error(tmp_path: Path):
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "x", "user": {"token": "t0ps3cret"}}],
            "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
        })
    )  # fmt: skip
    result = subprocess.run(
        [CONNECTORS, "install", "crds", "--kubeconfig", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the Kubernetes API at https://127.0.0.1:1")
    assert "t0ps3cret" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "manifest",
    sorted(
        str(p.relative_to(CRDS_FILE.parents[1]))
        for p in CRDS_FILE.parents[1].rglob("*.yaml")
        if "helm" not in p.parts
    ),
)
def test_every_manifest_under_deploy_passes_a_server_side_dry_run(
    kube_cluster: TestCluster, manifest: str
):
    kube_cluster.kubectl("create", "namespace", "connectors-system", check=False)
    result = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-f", str(CRDS_FILE.parents[1] / manifest), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout

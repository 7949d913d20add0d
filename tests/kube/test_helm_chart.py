"""The Helm chart: it lints, renders what the plain manifests hold, passes a server-side
dry run with every option on, and installs for real on a fresh control plane, where the
operator and proxy then run with the chart's own ServiceAccounts and RBAC."""

from __future__ import annotations

import filecmp
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from connectors.standalone.localregistry import LocalRegistry, free_port
from tests.conftest import require
from tests.support import seed, testcluster, wire
from tests.support.components import wait_for
from tests.support.standalone import CONNECTORS
from tests.support.testcluster import TestCluster

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "connectors"
RELEASE_NS = "connectors-system"
EVERY_OPTION = [
    "--set", "proxy.tls.enabled=true", "--set", "proxy.tls.secretName=proxy-tls",
    "--set", "proxy.autoscaling.enabled=true", "--set", "proxy.networkPolicy.enabled=true",
    "--set", "grafana.dashboard.enabled=true",
]  # fmt: skip


def helm_binary() -> Path:
    binaries = testcluster.testbin()
    helm = binaries / "helm" if binaries else None
    require(helm is not None and helm.is_file(), "helm is not built: run scripts/build-testbin")
    assert helm is not None
    return helm


def helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(helm_binary()), *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """A control plane of its own: the chart owns cluster-wide objects that other test
    modules create without Helm."""
    missing = testcluster.missing_reason()
    require(missing is None, missing or "")
    with testcluster.running(tmp_path_factory.mktemp("helm-cluster")) as cluster:
        yield cluster


def test_the_chart_lints_clean():
    result = helm("lint", str(CHART), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    result = helm("lint", str(CHART), "--strict", *EVERY_OPTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_manifests_under_deploy_are_what_the_chart_renders(tmp_path: Path):
    result = subprocess.run(
        [str(ROOT / "scripts" / "render-manifests"), str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=False,
        env={"HELM": str(helm_binary()), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rendered = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.yaml"))
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, ROOT / "deploy", rendered, shallow=False)
    assert (mismatch, errors) == ([], []), "run scripts/render-manifests and commit the result"


def test_the_charts_crds_and_class_are_the_generated_ones():
    assert (CHART / "crds" / "connectors.alauda.io.yaml").read_bytes() == (
        ROOT / "deploy" / "crds" / "connectors.alauda.io.yaml"
    ).read_bytes()
    assert (CHART / "files" / "pypi-connectorclass.yaml").read_bytes() == (
        ROOT / "src" / "connectors" / "classes" / "pypi.yaml"
    ).read_bytes()


def test_the_grafana_dashboard_configmap_renders_when_enabled_and_holds_the_json():
    template = ["template", "connectors", str(CHART), "--namespace", RELEASE_NS,
                "--kube-version", "1.36.0"]  # fmt: skip
    by_default = helm(*template)
    assert by_default.returncode == 0, by_default.stderr
    assert "grafana_dashboard" not in by_default.stdout
    rendered = helm(*template, "--show-only", "templates/grafana-dashboard.yaml", *EVERY_OPTION)
    assert rendered.returncode == 0, rendered.stderr
    configmap = yaml.safe_load(rendered.stdout)
    dashboard = (CHART / "dashboards" / "connectors-proxy.json").read_text()
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["connectors-proxy.json"] == dashboard


def test_the_charts_operator_leaves_the_built_in_classes_to_helm():
    # Helm installs the ConnectorClass with the release; an operator that applied it first
    # made `helm install` fail with "already exists" (seen once in CI on the node).
    template = ["template", "connectors", str(CHART), "--namespace", RELEASE_NS,
                "--kube-version", "1.36.0", "--show-only"]  # fmt: skip
    operator = helm(*template, "templates/operator-deployment.yaml")
    assert operator.returncode == 0, operator.stderr
    assert "- --no-builtin-classes" in operator.stdout
    assert "kind: ConnectorClass" in helm(*template, "templates/connectorclass-pypi.yaml").stdout
    accepted = subprocess.run(
        [CONNECTORS, "operator", "--help"], check=True, capture_output=True, text=True
    )
    assert "--no-builtin-classes" in accepted.stdout


def test_the_status_page_is_refused_unless_a_network_policy_fences_its_port():
    template = ["template", "connectors", str(CHART), "--namespace", RELEASE_NS,
                "--kube-version", "1.36.0", "--show-only", "templates/proxy-deployment.yaml",
                "--set", "proxy.statusPage=true"]  # fmt: skip
    for fence in ([], ["--set", "proxy.networkPolicy.enabled=true"]):
        refused = helm(*template, *fence)
        assert refused.returncode != 0
        assert "proxy.statusPage shows every namespace's connectors" in refused.stderr
    selector = "proxy.networkPolicy.metricsNamespaceSelector.matchLabels.team=ops"
    fenced = helm(*template, "--set", "proxy.networkPolicy.enabled=true", "--set", selector)
    assert fenced.returncode == 0, fenced.stderr
    assert "- --status-page" in fenced.stdout
    assert "--status-page" not in helm(*template[:-2]).stdout


@pytest.mark.parametrize("options", [[], EVERY_OPTION], ids=["defaults", "every-option"])
def test_the_rendered_chart_passes_a_server_side_dry_run(
    fresh_cluster: TestCluster, options: list[str]
):
    rendered = helm("template", "connectors", str(CHART), "--namespace", RELEASE_NS,
                    "--kube-version", "1.36.0", "--include-crds", *options)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    fresh_cluster.kubectl("create", "namespace", RELEASE_NS, check=False)
    # CRDs first: the ConnectorClass in the chart needs them to exist to be validated.
    fresh_cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    fresh_cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
    result = fresh_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=rendered.stdout, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = {line.split("/")[0] for line in result.stdout.splitlines()}
    expected = {"deployment.apps", "daemonset.apps", "csidriver.storage.k8s.io", "service",
                "poddisruptionbudget.policy", "connectorclass.connectors.alauda.io"}  # fmt: skip
    assert expected <= kinds
    if options:
        assert {"horizontalpodautoscaler.autoscaling", "networkpolicy.networking.k8s.io",
                "configmap"} <= kinds  # fmt: skip


def test_installed_for_real_the_seed_connector_becomes_ready_through_the_charts_rbac(
    fresh_cluster: TestCluster, pypi_registry: LocalRegistry, tmp_path: Path
):
    installed = helm("install", "connectors", str(CHART), "--namespace", RELEASE_NS,
                     "--create-namespace", kubeconfig=fresh_cluster.kubeconfig)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    for kind, name in [("deployment", "connectors-operator"), ("deployment", "connectors-proxy"),
                       ("daemonset", "connectors-csi"), ("service", "connectors-proxy"),
                       ("poddisruptionbudget", "connectors-proxy")]:  # fmt: skip
        fresh_cluster.kubectl("get", kind, name, "-n", RELEASE_NS)
    fresh_cluster.kubectl("get", "csidriver", "connectors-csi")
    fresh_cluster.kubectl("get", "connectorclass", "pypi")

    # No kubelet runs the Deployments here: run their containers' commands as processes,
    # each with a token of the ServiceAccount the chart made for it.
    processes = []
    port = free_port()
    proxy_args = ["--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0"]
    try:
        for component, args in [("operator", ["--reprobe-interval", "2"]), ("proxy", proxy_args)]:
            token = fresh_cluster.kubectl(
                "create", "token", f"connectors-{component}", "-n", RELEASE_NS
            ).stdout.strip()
            config = fresh_cluster.token_kubeconfig(f"chart-{component}", token)
            log = (tmp_path / f"{component}.log").open("wb")
            processes.append(subprocess.Popen(
                [CONNECTORS, component, "--kubeconfig", str(config), *args],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        fresh_cluster.kubectl("create", "namespace", seed.NAMESPACE)
        fresh_cluster.kubectl("apply", "-n", seed.NAMESPACE, "-f", "-", stdin=seed.step_2(
            address=pypi_registry.url, username=pypi_registry.username,
            password=pypi_registry.password,
        ))  # fmt: skip
        body = wait_for(fresh_cluster, seed.NAMESPACE, "pypi-connector")
        assert body["status"]["proxy"]["httpAddress"]["url"] == (
            "http://c-pypi-connector.connectors-pypi-demo.svc.cluster.local"
        )
        fresh_cluster.kubectl("get", "service", "c-pypi-connector", "-n", seed.NAMESPACE)
        # The proxy, reading Connectors, classes and Secrets through the chart's RBAC, is
        # ready and answers for the seed's connector.
        assert wire.request("GET", f"http://127.0.0.1:{port}/readyz").status == 200
        reply = wire.request(
            "GET",
            f"http://127.0.0.1:{port}/namespaces/{seed.NAMESPACE}/connectors/pypi-connector/simple/",
        )
        assert reply.status == 401  # no token: the connector is known, the client is not
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
    uninstalled = helm("uninstall", "connectors", "--namespace", RELEASE_NS, "--wait",
                       kubeconfig=fresh_cluster.kubeconfig)  # fmt: skip
    assert uninstalled.returncode == 0, uninstalled.stderr

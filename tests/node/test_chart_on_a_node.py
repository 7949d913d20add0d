"""The chart as shipped, installed with Helm on a real node: every component runs from the
image built by the Dockerfile's recipe, with the chart's own ServiceAccounts, RBAC, probes
and security settings."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.node.conftest import RELEASE_NS, get, lease_holder, pods, run_pod
from tests.support import images
from tests.support.node import Node
from tests.support.waiting import settled

# The first test also pays for the node's start (images built cold: a few minutes).
pytestmark = pytest.mark.timeout(600)


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_operator_replicas_run_with_exactly_one_leader(chart: Node):
    replicas = pods(chart, RELEASE_NS, "app.kubernetes.io/name=connectors-operator")
    assert len(replicas) == 2 and all(ready(p) for p in replicas)
    holder = lease_holder(chart)
    leaders = [p for p in replicas if holder.startswith(p["metadata"]["name"])]
    assert len(leaders) == 1, f"lease held by {holder!r}"
    logs = [
        chart.cluster.kubectl("logs", "-n", RELEASE_NS, p["metadata"]["name"]).stdout
        for p in replicas
    ]
    assert sum("leading as" in log for log in logs) == 1


def test_proxy_replicas_answer_behind_their_service(chart: Node):
    replicas = pods(chart, RELEASE_NS, "app.kubernetes.io/name=connectors-proxy")
    assert len(replicas) == 2 and all(ready(p) for p in replicas)
    slices = get(chart, "endpointslices", "-n", RELEASE_NS, "-l",
        "kubernetes.io/service-name=connectors-proxy",
    )  # fmt: skip
    addresses = {a for s in slices["items"] for e in s["endpoints"] for a in e["addresses"]}
    assert addresses == {p["status"]["podIP"] for p in replicas}
    service = get(chart, "service", "connectors-proxy", "-n", RELEASE_NS)
    cluster_ip = service["spec"]["clusterIP"]
    # From a Pod, by the Service's DNS name: the proxy's readiness answer.
    probe = run_pod(
        chart, "proxy-probe",
        "import urllib.request as u; print(u.urlopen("
        "'http://connectors-proxy.connectors-system.svc.cluster.local/readyz', timeout=5).status)",
    )  # fmt: skip
    assert probe.strip().endswith("200"), probe
    assert cluster_ip


def test_components_run_as_the_dockerfile_user_from_the_project_image(chart: Node):
    recipe_user = images.dockerfile_recipe((images.ROOT / "Dockerfile").read_text()).config.user
    for component in ("connectors-operator", "connectors-proxy"):
        pod = pods(chart, RELEASE_NS, f"app.kubernetes.io/name={component}")[0]
        name = pod["metadata"]["name"]
        assert pod["spec"]["containers"][0]["image"] == chart.project_image
        uid = chart.cluster.kubectl(
            "exec",
            "-n",
            RELEASE_NS,
            str(name),
            "--",
            "python3",
            "-c",
            "import os; print(os.getuid())",
        ).stdout.strip()
        assert f"{uid}:{uid}" == recipe_user


def test_the_csi_driver_is_registered_with_kubelet(chart: Node):
    csinode = get(chart, "csinode", chart.access.name)
    assert [d["name"] for d in csinode["spec"]["drivers"]] == ["connectors-csi"]
    plugin = pods(chart, RELEASE_NS, "app.kubernetes.io/name=connectors-csi")
    assert len(plugin) == 1 and ready(plugin[0])
    logs = chart.cluster.kubectl(
        "logs",
        "-n",
        RELEASE_NS,
        plugin[0]["metadata"]["name"],
        "-c",
        "node-driver-registrar",
    ).stdout
    assert "registered=true" in logs


def test_a_standby_operator_replica_stops_at_once_when_asked(chart: Node):
    """A rollout or a drain asks with SIGTERM; a standby (waiting for the Lease) must not
    sit out the grace period as a process that ignores it."""
    holder = lease_holder(chart)
    replicas = pods(chart, RELEASE_NS, "app.kubernetes.io/name=connectors-operator")
    (standby,) = [p for p in replicas if not holder.startswith(p["metadata"]["name"])]
    name = standby["metadata"]["name"]
    assert standby["spec"]["terminationGracePeriodSeconds"] == 30  # the chart's (default)
    started = time.monotonic()
    chart.cluster.kubectl("delete", "pod", name, "-n", RELEASE_NS, "--wait=false")
    settled(
        lambda: chart.cluster.kubectl("get", "pod", name, "-n", RELEASE_NS, check=False)
        .returncode != 0,
        10, f"standby {name} gone",
    )  # fmt: skip
    print(f"\nstandby gone {time.monotonic() - started:.1f}s after the delete")
    settled(
        lambda: len(pods(chart, RELEASE_NS, "app.kubernetes.io/name=connectors-operator")) == 2
        and lease_holder(chart) == holder,
        60, "a new standby beside the same leader",
    )  # fmt: skip
